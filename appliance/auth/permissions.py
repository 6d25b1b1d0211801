"""Role checks shared by every domain's services."""

from appliance.auth.schemas import CurrentUser
from appliance.errors import Forbidden


def require_admin(user: CurrentUser) -> None:
    if not user.is_admin:
        raise Forbidden("only an admin may do this")


def require_writer(user: CurrentUser) -> None:
    if not user.can_write:
        raise Forbidden("viewers cannot change anything")
