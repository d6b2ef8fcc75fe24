"""Running one scenario point: start `ringside serve`, run fio on the mounted file, measure
the server, the client and the machine over fio's window, stop and unmount, write the
result (runner.py; fio.py builds the job and reads its output, metrics.py and
proctree.py measure, serving.py is what the runner and `ringside serve` say to each other)."""
