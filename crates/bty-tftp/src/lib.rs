//! bty-tftp: read-only TFTP sidecar for iPXE bootfiles
