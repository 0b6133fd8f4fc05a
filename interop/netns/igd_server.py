"""A small UPnP Internet Gateway Device for the namespace lab, built on
async-upnp-client's server support: a WANIPConnection:1 service whose
AddPortMapping and DeletePortMapping apply real nftables DNAT rules in the
router's namespace (its own table ``ip igd``).

Why not miniupnpd: Debian's miniupnpd 2.3.1 refuses to map when its WAN
address is private or reserved, TEST-NET included, and the lab's WAN is
203.0.113.0/24 (docs/nat.md, "UPnP").

Run inside the NAT's namespace (the test starts and stops it):

    python igd_server.py --lan-ip 10.0.1.1 --lan-net 10.0.1.0/24 \\
        --wan-ip 203.0.113.1 --wan-if public

SSDP is answered on the LAN only: the multicast group is joined on the
LAN address, and the ``igd`` table drops SSDP arriving on the WAN
interface.  Prints ``ready <description URL>`` once serving; each mapping
change prints one line (``mapped …`` / ``unmapped …``); SIGTERM removes the
table and exits.
"""

# No `from __future__ import annotations`: the library compares the
# action methods' annotations with real types.

import argparse
import asyncio
import ipaddress
import re
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from typing import Any

from async_upnp_client.client import UpnpRequester
from async_upnp_client.const import DeviceInfo, ServiceInfo, StateVariableTypeInfo
from async_upnp_client.exceptions import UpnpActionError, UpnpActionErrorCode
from async_upnp_client.server import (
    UpnpServer,
    UpnpServerDevice,
    UpnpServerService,
    callable_action,
    create_state_var,
)

TABLE = "igd"


def nft(*args: str, script: str | None = None) -> str:
    done = subprocess.run(["nft", *args], input=script, capture_output=True, text=True,
                          timeout=10, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"nft {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


class Rules:
    """The DNAT rules this IGD owns, one per (protocol, external port)."""

    def __init__(self, wan_if: str, lan_net: str) -> None:
        self.wan_if = wan_if
        self.lan_net = ipaddress.IPv4Network(lan_net)
        self.handles: dict[tuple[str, int], int] = {}

    def install(self) -> None:
        nft("-f", "-", script=(
            f"table ip {TABLE} {{\n"
            "  chain prerouting {\n"
            "    type nat hook prerouting priority dstnat; policy accept;\n"
            "  }\n"
            "  chain input {\n"
            "    type filter hook input priority filter - 1; policy accept;\n"
            f'    iifname "{self.wan_if}" udp dport 1900 drop\n'
            "  }\n"
            "}\n"))

    def remove_all(self) -> None:
        nft("delete", "table", "ip", TABLE)
        self.handles.clear()

    def add(self, proto: str, ext_port: int, client: str, int_port: int) -> None:
        key = (proto, ext_port)
        out = nft("--echo", "--handle", "add", "rule", "ip", TABLE, "prerouting",
                  "iifname", self.wan_if, proto.lower(), "dport", str(ext_port),
                  "dnat", "to", f"{client}:{int_port}")
        found = re.search(r"# handle (\d+)", out)
        if found is None:
            raise RuntimeError(f"nft gave no handle: {out!r}")
        # A renewal or a change replaces the rule: the new one goes in first,
        # so packets never meet a gap.
        previous = self.handles.get(key)
        self.handles[key] = int(found.group(1))
        if previous is not None:
            nft("delete", "rule", "ip", TABLE, "prerouting", "handle", str(previous))

    def delete(self, proto: str, ext_port: int) -> bool:
        handle = self.handles.pop((proto, ext_port), None)
        if handle is None:
            return False
        nft("delete", "rule", "ip", TABLE, "prerouting", "handle", str(handle))
        return True


RULES: Rules | None = None
WAN_IP = "0.0.0.0"


def _say(text: str) -> None:
    print(text, flush=True)


class WANIPConnection(UpnpServerService):
    SERVICE_DEFINITION = ServiceInfo(
        service_id="urn:upnp-org:serviceId:WANIPConn1",
        service_type="urn:schemas-upnp-org:service:WANIPConnection:1",
        control_url="/upnp/control/WANIPConn1",
        event_sub_url="/upnp/event/WANIPConn1",
        scpd_url="/WANIPCn.xml",
        xml=ET.Element("server_service"),
    )
    STATE_VARIABLE_DEFINITIONS: dict[str, StateVariableTypeInfo] = {
        "ExternalIPAddress": create_state_var("string"),
        "RemoteHost": create_state_var("string"),
        "ExternalPort": create_state_var("ui2"),
        "InternalPort": create_state_var("ui2"),
        "PortMappingProtocol": create_state_var("string", allowed=["TCP", "UDP"]),
        "InternalClient": create_state_var("string"),
        "PortMappingEnabled": create_state_var("boolean"),
        "PortMappingDescription": create_state_var("string"),
        "PortMappingLeaseDuration": create_state_var("ui4"),
    }

    @callable_action(name="GetExternalIPAddress", in_args={},
                     out_args={"NewExternalIPAddress": "ExternalIPAddress"})
    async def get_external_ip_address(self) -> dict[str, Any]:
        return {"NewExternalIPAddress": WAN_IP}

    @callable_action(
        name="AddPortMapping",
        in_args={"NewRemoteHost": "RemoteHost", "NewExternalPort": "ExternalPort",
                 "NewProtocol": "PortMappingProtocol", "NewInternalPort": "InternalPort",
                 "NewInternalClient": "InternalClient", "NewEnabled": "PortMappingEnabled",
                 "NewPortMappingDescription": "PortMappingDescription",
                 "NewLeaseDuration": "PortMappingLeaseDuration"},
        out_args={})
    async def add_port_mapping(self, NewRemoteHost: str, NewExternalPort: int,
                               NewProtocol: str, NewInternalPort: int, NewInternalClient: str,
                               NewEnabled: bool, NewPortMappingDescription: str,
                               NewLeaseDuration: int) -> dict[str, Any]:
        assert RULES is not None
        try:
            inside = ipaddress.IPv4Address(NewInternalClient) in RULES.lan_net
        except ValueError:
            inside = False
        if not inside or not NewExternalPort or not NewInternalPort:
            # 402 Invalid Args: only LAN hosts get mappings, as miniupnpd's secure mode.
            raise UpnpActionError(error_code=UpnpActionErrorCode.INVALID_ARGS,
                                  error_desc="Invalid Args")
        RULES.add(NewProtocol, NewExternalPort, NewInternalClient, NewInternalPort)
        _say(f"mapped {NewProtocol} {NewExternalPort} -> {NewInternalClient}:{NewInternalPort}"
             f" lease {NewLeaseDuration}")
        return {}

    @callable_action(
        name="DeletePortMapping",
        in_args={"NewRemoteHost": "RemoteHost", "NewExternalPort": "ExternalPort",
                 "NewProtocol": "PortMappingProtocol"},
        out_args={})
    async def delete_port_mapping(self, NewRemoteHost: str, NewExternalPort: int,
                                  NewProtocol: str) -> dict[str, Any]:
        assert RULES is not None
        if not RULES.delete(NewProtocol, NewExternalPort):
            # 714 NoSuchEntryInArray
            raise UpnpActionError(error_code=714, error_desc="NoSuchEntryInArray")
        _say(f"unmapped {NewProtocol} {NewExternalPort}")
        return {}


def _device_info(device_type: str, name: str, udn: str, url: str) -> DeviceInfo:
    return DeviceInfo(device_type=device_type, friendly_name=name, manufacturer="overlay lab",
                      manufacturer_url=None, model_description=None, model_name=name,
                      model_number=None, model_url=None, serial_number=None, udn=udn,
                      upc=None, presentation_url=None, url=url, icons=[],
                      xml=ET.Element("server_device"))


class WANConnectionDevice(UpnpServerDevice):
    DEVICE_DEFINITION = _device_info("urn:schemas-upnp-org:device:WANConnectionDevice:1",
                                     "WANConnectionDevice",
                                     "uuid:5d6a2c3e-0000-4000-8000-000000000003", "/wcd.xml")
    EMBEDDED_DEVICES: list[type[UpnpServerDevice]] = []
    SERVICES = [WANIPConnection]


class WANDevice(UpnpServerDevice):
    DEVICE_DEFINITION = _device_info("urn:schemas-upnp-org:device:WANDevice:1", "WANDevice",
                                     "uuid:5d6a2c3e-0000-4000-8000-000000000002", "/wd.xml")
    EMBEDDED_DEVICES = [WANConnectionDevice]
    SERVICES: list[type[UpnpServerService]] = []


class Gateway(UpnpServerDevice):
    DEVICE_DEFINITION = _device_info("urn:schemas-upnp-org:device:InternetGatewayDevice:1",
                                     "overlay lab IGD",
                                     "uuid:5d6a2c3e-0000-4000-8000-000000000001", "/igd.xml")
    EMBEDDED_DEVICES = [WANDevice]
    SERVICES: list[type[UpnpServerService]] = []

    def __init__(self, requester: UpnpRequester, base_uri: str, boot_id: int = 1,
                 config_id: int = 1) -> None:
        super().__init__(requester, base_uri, boot_id, config_id)


async def main() -> int:
    global RULES, WAN_IP
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lan-ip", required=True)
    parser.add_argument("--lan-net", required=True)
    parser.add_argument("--wan-ip", required=True)
    parser.add_argument("--wan-if", required=True)
    parser.add_argument("--http-port", type=int, default=0)
    ns = parser.parse_args()
    WAN_IP = ns.wan_ip
    RULES = Rules(ns.wan_if, ns.lan_net)
    RULES.install()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    port = ns.http_port or _free_port(ns.lan_ip)
    server = UpnpServer(Gateway, (ns.lan_ip, 0), http_port=port)
    try:
        await server.async_start()
        _say(f"ready http://{ns.lan_ip}:{port}{Gateway.DEVICE_DEFINITION.url}")
        await stop.wait()
    finally:
        await server.async_stop()
        RULES.remove_all()
        _say("stopped")
    return 0


def _free_port(ip: str) -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((ip, 0))
        return int(sock.getsockname()[1])


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
