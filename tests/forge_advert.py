"""Forged lanchat adverts for tests, sent by a script with python-zeroconf, not by a node.

Usage: forge_advert.py MY_IP SECONDS JSON -- JSON is a list of advert fields (handle, room,
and any of lanchat.core.advert.Advert's other fields; keys are random unless given). Each
advert is registered as its own service with ``cooperating_responders=True`` (no probing,
no conflict check: one call is enough to claim any name), announced again every second for
SECONDS, and nothing listens behind it. Prints {"step": "announced"} once all are out.
"""

from __future__ import annotations

import asyncio
import json
import sys

from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from lanchat.core.advert import SERVICE_TYPE, Advert
from lanchat.identity import Identity


def forged(my_ip: str, fields: dict[str, object]) -> Advert:
    someone = Identity.generate()
    values: dict[str, object] = {
        "address": my_ip,
        "id_key": someone.key,
        "curve_key": someone.curve_public,
        "router_port": 47999,  # nothing listens there
        "pub_port": 47998,
        "mentor": False,
        "priority": 0,
        "started_at": 1.0,
        **fields,
    }
    return Advert(**values)  # type: ignore[arg-type]


async def main() -> int:
    my_ip, seconds, spec = sys.argv[1], float(sys.argv[2]), json.loads(sys.argv[3])
    aiozc = AsyncZeroconf(interfaces=[my_ip], ip_version=IPVersion.V4Only)
    infos = []
    for n, fields in enumerate(spec):
        advert = forged(my_ip, fields)
        info = AsyncServiceInfo(
            SERVICE_TYPE,
            f"{advert.handle}.{SERVICE_TYPE}",
            port=advert.router_port,
            properties={**advert.to_txt(), "n": str(n % 10)},
            server=f"forged-{n}.local.",
            parsed_addresses=[advert.address],
        )
        await (await aiozc.async_register_service(info, cooperating_responders=True))
        infos.append(info)
    print(json.dumps({"step": "announced"}), flush=True)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    zc = aiozc.zeroconf
    while loop.time() < deadline:
        await asyncio.sleep(1.0)
        for info in infos:  # keep the forged records fresh in everyone's cache
            zc.async_send(zc.generate_service_broadcast(info, None))
    await aiozc.async_close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
