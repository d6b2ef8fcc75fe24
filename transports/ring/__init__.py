"""The io_uring side of the uring transport: its C (compiled into transports._native by
transports/native/build.py), queues and buffers."""
