"""A private Postfix whose smtp(8) runs chrooted in its queue directory, as Debian's does by default.

Debian's master.cf has ``y`` in the chroot column of smtp and relay, and
/usr/lib/postfix/configure-instance.sh copies what those processes read
after chroot(2) into the queue directory before every start: a few /etc
files and the NSS, resolver and gcc_s libraries.  :func:`chroot_postfix`
does the same for a :class:`~tests.world.postfix.PrivatePostfix`, whose
own resolv.conf (the test world's resolver) is the one copied.
"""

from __future__ import annotations

import glob
import shutil
from pathlib import Path

from tests.world.postfix import PrivatePostfix

CHROOTED = ("smtp", "relay")
# configure-instance.sh's FILES (nss_mdns.config only exists with libnss-mdns)
CHROOT_FILES = ("etc/localtime", "etc/services", "etc/hosts", "etc/host.conf", "etc/nsswitch.conf")
CHROOT_LIBRARIES = ("gcc_s", "nss", "resolv")


def chroot_postfix(instance: PrivatePostfix) -> None:
    """Turn chroot on for :data:`CHROOTED` in ``instance``'s master.cf and fill its chroot (before start)."""
    master_cf = instance.conf / "master.cf"
    lines = []
    for line in master_cf.read_text().splitlines():
        fields = line.split()
        if fields and fields[0] in CHROOTED and fields[1] == "unix":
            fields[4] = "y"
            line = "  ".join(fields)
        lines.append(line)
    master_cf.write_text("\n".join(lines) + "\n")
    root = instance.queue
    for name in CHROOT_FILES:
        if Path("/", name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(Path("/", name), root / name)
    shutil.copy(instance.resolv_conf, root / "etc" / "resolv.conf")
    for name in CHROOT_LIBRARIES:
        for library in glob.glob(f"/lib/*/lib{name}*.so*") + glob.glob(f"/lib/lib{name}*.so*"):
            target = root / library.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(library, target)


def chrooted_processes(instance: PrivatePostfix) -> list[int]:
    """Pids of the processes whose root directory is ``instance``'s queue directory."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if (proc / "root").resolve() == instance.queue.resolve():
                    found.append(int(proc.name))
            except OSError:
                continue
    return found
