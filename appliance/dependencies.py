"""Values handed to controllers: a catalog connection per request, the config, the caller."""

from __future__ import annotations

from collections.abc import Iterator

from litestar import Request
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide

from appliance.caller import CurrentUser
from appliance.config import Config
from appliance.db import Database


def _provide_db(state: State) -> Iterator[Database]:
    pool = state.pool
    db = pool.acquire()
    try:
        yield db
    finally:
        pool.release(db)


def _provide_config(state: State) -> Config:
    return state.config


def _provide_user(request: Request) -> CurrentUser:
    return request.user


DEPENDENCIES = {
    "db": Provide(_provide_db),
    "config": Provide(_provide_config, sync_to_thread=False),
    "user": Provide(_provide_user, sync_to_thread=False),
}

# Explicit markers for controller signatures (Litestar 3 drops inferred dependencies).
DB = NamedDependency[Database]
Caller = NamedDependency[CurrentUser]
Settings = NamedDependency[Config]
