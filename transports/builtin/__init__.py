"""The transports Ringside implements itself, each serving the export in the `ringside serve`
process: uring (FUSE-over-io_uring: uring/, its ring mechanics beside it), devfuse (our
/dev/fuse loop on the same codec), pyfuse3 (libfuse's loop through pyfuse3) and direct
(no server at all: fio on the backing, the ceiling). Others' servers are in ../peers/."""
