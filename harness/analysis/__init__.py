"""The analysis layer: compare transports, draw figures and write reports from a campaign.

Modules:
- campaign_results: load_campaign(DIR or id) -> CampaignResults (the loader's table, warmups
  set aside, and the manifest)
- stats: ratio of geometric means with Welch's log-scale 95% CI, pyperf-style verdicts
- compare: compare(campaign, baseline) -> Comparison (per point, plus geometric mean)
- tables: the Comparison as a terminal table, Markdown, CSV, or 72-column email text
- latency: fio json+ latency bins and percentiles from a result's fio_raw
- plots: figures by name (PLOTS), rendered as PNG and SVG
- report: one page, Markdown or self-contained HTML
- synthetic: campaigns shaped like real ones with known answers, for tests

Everything here reads results through `harness.results.load` (tables) and, for fio's
raw latency histograms and per-thread figures, `harness.results.read_result`.
"""
