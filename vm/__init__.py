"""Virtual machines: images, provisioning, QEMU, SSH."""
