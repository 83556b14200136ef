"""Virtual machines: images, provisioning, QEMU, SSH."""

from harness.core.render import Templates

templates = Templates(__name__)
