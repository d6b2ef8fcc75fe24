"""The FUSE protocol: the kernel ABI, the codec, the /dev/fuse loop and mounting."""
