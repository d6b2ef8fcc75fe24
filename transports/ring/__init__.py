"""The io_uring side of the uring transport: its C, the cffi builder, queues and buffers."""
