#!/usr/bin/env python3
"""The emulator (moto server) for several accounts and Regions from one seed file.

usage: python moto_accounts.py SEED.json -H 127.0.0.1 -p PORT   (run with moto's Python)

moto 5.2.1 loads `MOTO_AMIS_PATH` once and parses each entry's `creation_date` in place,
so every backend after the first fails (`../shared/DESIGN.md`). This launcher gives each
(account, Region) backend a fresh copy, holding only the seed entries whose `owner_id`
is that account: each account sees its own images, in every Region.
"""
import copy
import json
import os
import sys

os.environ["MOTO_AMIS_PATH"] = sys.argv[1]
os.environ.setdefault("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")

import moto.ec2.models.amis as amis  # noqa: E402
from moto.server import main  # noqa: E402

with open(sys.argv[1], encoding="utf-8") as f:
    SEED = json.load(f)
_load = amis.AmiBackend._load_amis


def _fresh(self) -> None:
    amis.AMIS = [copy.deepcopy(a) for a in SEED if a.get("owner_id") == self.account_id]
    _load(self)


amis.AmiBackend._load_amis = _fresh

if __name__ == "__main__":
    main(sys.argv[2:])
