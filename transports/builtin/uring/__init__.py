"""The uring transport (transport.py) and its io_uring side: queues and buffers (queue.py)
and their C (ring.c, ring.h; compiled into transports._native by transports/native/)."""
