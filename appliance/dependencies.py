"""Values handed to controllers: a catalog connection per request, the config, the caller."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Literal

from litestar import Request
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.params import Parameter

from appliance.caller import CurrentUser
from appliance.config import Config
from appliance.db import Database
from appliance.ids import MAX_ID


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

# A row id in a path or a query, 1..2^63-1, declared so the OpenAPI document says the range the code keeps.
# An optional one needs OptionalId: Litestar does not look for a Parameter inside `Id | None`, so its bound
# would be documented but not kept (tests/test_security.py sends 2^63 to every id of every route).
Id = Annotated[int, Parameter(gt=0, le=MAX_ID)]
OptionalId = Annotated[int | None, Parameter(gt=0, le=MAX_ID)]

# A yes/no query parameter: exactly `true` or `false`, as the OpenAPI document says (a plain `bool` query also
# took 1, 0, TRUE, yes...). The handler reads it with `is_true`.
QueryFlag = Literal["true", "false"]


def is_true(flag: QueryFlag) -> bool:
    return flag == "true"
