"""The systemd unit and udev rules as files: the unit asks for what the issue and the server need
(notify, watchdog, restart, its own user, hardening, device access, reload by SIGHUP), and the
udev rules cover every accelerator USB id and device node the server discovers (read from the
server's sources, so a new id without a rule fails here). `systemd-analyze verify` of the
installed unit runs in test_install.py, inside the installed system.
"""

import re

from harness import ROOT

UNIT = ROOT / "deploy" / "systemd" / "inference-server.service"
SYSUSERS = ROOT / "deploy" / "systemd" / "inference-server.sysusers"
RULES = ROOT / "deploy" / "udev" / "60-inference-server.rules"
SERVER_SOURCES = ROOT / "server" / "src"
CONFIG = ROOT / "deploy" / "server.toml"

UDEV_MATCH_KEYS = {"SUBSYSTEM", "KERNEL", "ENV", "ATTR", "ATTRS", "ACTION", "DRIVERS"}
UDEV_ASSIGN_KEYS = {"GROUP", "MODE", "TAG", "OWNER"}


def unit_sections():
    """{(section, key): [values]}; repeated keys (DeviceAllow=) are legal in units."""
    values = {}
    section = None
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        values.setdefault((section, key), []).append(value)
    return values


def test_the_unit_is_a_hardened_notify_service_with_a_watchdog():
    unit = unit_sections()

    def one(section, key):
        assert (section, key) in unit, f"[{section}] {key}= is missing"
        return unit[(section, key)][-1]

    assert one("Service", "Type") == "notify"
    assert one("Service", "NotifyAccess") == "main"
    assert one("Service", "ExecReload") == "/bin/kill -HUP $MAINPID"
    assert re.fullmatch(r"\d+s", one("Service", "WatchdogSec"))
    assert one("Service", "Restart") == "on-failure"
    assert one("Service", "User") == one("Service", "Group") == "inference-server"
    for key, value in [("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"),
                       ("PrivateTmp", "yes"), ("CapabilityBoundingSet", ""),
                       ("ReadOnlyPaths", "/var/lib/inference-server/models"),
                       ("DevicePolicy", "closed")]:
        assert one("Service", key) == value, key
    assert set(unit[("Service", "DeviceAllow")]) == {"char-apex rw", "char-usb_device rw"}
    exec_start = one("Service", "ExecStart").split()
    assert exec_start == ["/opt/inference-server/bin/inference-server", "--config",
                          "/etc/inference-server/server.toml"]
    # The drain fits in the stop timeout.
    grace = int(re.search(r"^shutdown_grace = (\d+)", CONFIG.read_text(), re.M).group(1))
    assert int(one("Service", "TimeoutStopSec").rstrip("s")) > grace + 4
    assert one("Install", "WantedBy") == "multi-user.target"


def test_sysusers_makes_a_system_user_without_a_login():
    lines = SYSUSERS.read_text().splitlines()
    entries = [line for line in lines if line.strip() and not line.startswith("#")]
    assert len(entries) == 1
    kind, name, uid, *_rest = re.findall(r'"[^"]*"|\S+', entries[0])
    assert (kind, name, uid) == ("u", "inference-server", "-")
    assert entries[0].endswith("/usr/sbin/nologin")


def parse_rules():
    """Each rule as (matches {key: value}, assignments {key: value}); fails on bad syntax."""
    rules = []
    for number, line in enumerate(RULES.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        matches, assigns = {}, {}
        for item in [i.strip() for i in line.split(",")]:
            m = re.fullmatch(r'([A-Z_]+)(\{[A-Za-z_]+\})?(==|!=|=|\+=|:=)"([^"]*)"', item)
            assert m, f"{RULES.name}:{number}: cannot parse {item!r}"
            key, attr, op, value = m.groups()
            if op in ("==", "!="):
                assert key in UDEV_MATCH_KEYS, f"{RULES.name}:{number}: {key} is not a match key"
                matches[key + (attr or "")] = value
            else:
                assert key in UDEV_ASSIGN_KEYS, f"{RULES.name}:{number}: {key} cannot be assigned"
                assigns[key] = value
        assert matches and assigns, f"{RULES.name}:{number}: a rule matches and assigns"
        rules.append((matches, assigns))
    return rules


def server_usb_ids():
    """Every (vendor, product) the server's device discovery looks for."""
    ids = set()
    for source in SERVER_SOURCES.rglob("*.rs"):
        for vendor, product in re.findall(r'\("([0-9a-fA-F]{4})",\s*"([0-9a-fA-F]{4})"\)',
                                          source.read_text().split("#[cfg(test)]")[0]):
            ids.add((vendor.lower(), product.lower()))
    return ids


def test_udev_rules_give_the_service_group_every_accelerator_the_server_discovers():
    rules = parse_rules()
    for matches, assigns in rules:
        assert assigns == {"GROUP": "inference-server", "MODE": "0660"}, (matches, assigns)
    usb = {(m["ATTR{idVendor}"], m["ATTR{idProduct}"]) for m, _ in rules
           if m.get("SUBSYSTEM") == "usb"}
    for m, _ in rules:
        if m.get("SUBSYSTEM") == "usb":
            assert m.get("ENV{DEVTYPE}") == "usb_device", m
    wanted = server_usb_ids()
    assert {("1a6e", "089a"), ("18d1", "9302"), ("03e7", "2485"), ("03e7", "f63b")} <= wanted
    assert wanted <= usb, f"USB ids the server looks for without a rule: {wanted - usb}"
    assert any(m.get("SUBSYSTEM") == "apex" for m, _ in rules), "the Coral PCIe /dev/apex_N"
