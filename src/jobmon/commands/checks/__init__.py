"""The check messages (Healthchecks' API as protocol messages; the HTTP side is
``jobmon.hc``): one module per message, as every command."""

from . import (
    create_check,
    delete_check,
    get_badges,
    get_check,
    get_check_flips,
    get_check_pings,
    get_ping_body,
    list_checks,
    pause_check,
    ping_check,
    resume_check,
    update_check,
)

MODULES = (
    create_check,
    update_check,
    get_check,
    list_checks,
    delete_check,
    pause_check,
    resume_check,
    ping_check,
    get_check_pings,
    get_ping_body,
    get_check_flips,
    get_badges,
)
