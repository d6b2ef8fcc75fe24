"""The analysis layer: compare transports, draw figures and write reports from a campaign.

Everything here reads results through `harness.results.load` (tables) and, for fio's
raw latency histograms, `harness.results.read_result`.
"""
