"""Where serving threads run: their scheduling policy (policy.py: `sched=`, the starvation
guard's and devfuse's following's Python side), sched=idle's starvation guard (guard.c: a C
thread that moves a starved SCHED_IDLE thread to SCHED_BATCH for a while) and devfuse's
client following (follow.c: a /dev/fuse reader binds itself to the CPU of a client that
waits for each reply)."""
