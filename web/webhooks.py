"""The event feed and webhook endpoints over HTTP: one short view per ledger_py method.

`GET /events` reads the feed with a cursor (list_events); `/webhooks` holds
the key's app's endpoints, their delivery log and resend. The app is always
the API key's: another app's endpoint is 404, as one that does not exist.
Every rule (URLs, event types, cursors, page sizes) is the SQL functions'.
"""

from __future__ import annotations

from typing import Any

from apiflask import APIBlueprint
from flask.views import MethodView

from web import schemas as s
from web.auth import auth, current_app_name, reading_app
from web.ledger_api import ledger

bp = APIBlueprint("webhooks", __name__, tag="Webhooks")
events_bp = APIBlueprint("events", __name__, tag="Events")

HTTP_PAGE_SIZE = 100

READ_ERRORS: dict[int, Any] = {
    400: "a path or query string that is not UTF-8",
    422: "an argument the ledger refuses (a malformed cursor, a limit out of 1 to 1000)",
    503: "database unreachable",
}
ENDPOINT_READ_ERRORS: dict[int, Any] = {404: "no such endpoint of the key's app", **READ_ERRORS}
WRITE_ERRORS: dict[int, Any] = {
    400: "malformed JSON, or a path that is not UTF-8",
    403: "an audit key (it writes nothing)",
    404: "no such endpoint of the key's app",
    413: "request body larger than 4 MiB",
    415: "a body that is not application/json",
    422: "a value the ledger refuses (url, event_types, description)",
    503: "database unreachable",
}


# ---- the feed -----------------------------------------------------------------------------------


@events_bp.get("/events")
@events_bp.auth_required(auth)
@events_bp.input(s.EventsQuery, location="query", arg_name="query")
@events_bp.output(s.EventsOut)
@events_bp.doc(summary="Every owner's events in feed order, after a cursor", responses=READ_ERRORS)
def list_events(query: dict[str, Any]) -> Any:
    """Oldest first. Follow next_cursor page after page: an event whose
    transaction committed after later ones still comes, later in the feed,
    so a reader never skips one. The feed keeps events for the retention
    window (30 days by default): read within it. Other apps' metadata and
    idempotency keys are left out of each payload."""
    limit = HTTP_PAGE_SIZE if query["limit"] is None else query["limit"]
    events = ledger().list_events(app=current_app_name(), after=query["after"], max_rows=limit)
    return {"events": events, "next_cursor": events[-1].cursor if events else query["after"]}


# ---- webhook endpoints --------------------------------------------------------------------------


@bp.post("/webhooks")
@bp.auth_required(auth)
@bp.input(s.WebhookIn, arg_name="body")
@bp.output(s.WebhookEndpointCreated, status_code=201, description="the endpoint and its secret")
@bp.doc(summary="Register a webhook endpoint of the key's app", responses=WRITE_ERRORS)
def create_endpoint(body: dict[str, Any]) -> Any:
    """It is sent the events that come after its registration (of event_types,
    or every type), each signed per Standard Webhooks with the secret of this
    answer: the one time it is shown. Each request registers a new endpoint."""
    created = ledger().create_webhook_endpoint(
        app=current_app_name(),
        url=body["url"],
        event_types=body["event_types"],
        description=body["description"],
    )
    return {"endpoint": created, "secret": created.secret}, 201


@bp.get("/webhooks")
@bp.auth_required(auth)
@bp.output(s.WebhookEndpointsOut)
@bp.doc(summary="The key's app's webhook endpoints (never their secrets)", responses=READ_ERRORS)
def list_endpoints() -> Any:
    """Oldest first; an audit key lists every app's."""
    return {"endpoints": ledger().list_webhook_endpoints(app=reading_app())}


class EndpointResource(MethodView):
    """GET and DELETE of one endpoint, one routing rule for both: an id out of
    the bigint range is then 404 for either method (two rules of one path
    would make werkzeug answer 405 for the second method)."""

    @bp.auth_required(auth)
    @bp.output(s.WebhookEndpointOne)
    @bp.doc(summary="One webhook endpoint", responses=ENDPOINT_READ_ERRORS)
    def get(self, endpoint_id: int) -> Any:
        endpoint = ledger().get_webhook_endpoint(endpoint_id=endpoint_id, app=reading_app())
        return {"endpoint": endpoint}

    @bp.auth_required(auth)
    @bp.output(s.WebhookEndpointOne, description="the endpoint as it was")
    @bp.doc(summary="Delete a webhook endpoint with its deliveries and log", responses=WRITE_ERRORS)
    def delete(self, endpoint_id: int) -> Any:
        gone = ledger().delete_webhook_endpoint(endpoint_id=endpoint_id, app=current_app_name())
        return {"endpoint": gone}


bp.add_url_rule("/webhooks/<int:endpoint_id>", view_func=EndpointResource.as_view("endpoint"))


@bp.post("/webhooks/<int:endpoint_id>/disable")
@bp.auth_required(auth)
@bp.output(s.WebhookEndpointOne)
@bp.doc(
    summary="Disable an endpoint: nothing is sent to it until it is enabled again",
    responses=WRITE_ERRORS,
)
def disable_endpoint(endpoint_id: int) -> Any:
    """Its pending deliveries wait; disabling a disabled endpoint changes nothing."""
    endpoint = ledger().set_webhook_endpoint_active(
        endpoint_id=endpoint_id, app=current_app_name(), active=False
    )
    return {"endpoint": endpoint}


@bp.post("/webhooks/<int:endpoint_id>/enable")
@bp.auth_required(auth)
@bp.output(s.WebhookEndpointOne)
@bp.doc(summary="Enable a disabled endpoint again", responses=WRITE_ERRORS)
def enable_endpoint(endpoint_id: int) -> Any:
    """It resumes from the event where it stopped (events pruned meanwhile are
    not sent)."""
    endpoint = ledger().set_webhook_endpoint_active(
        endpoint_id=endpoint_id, app=current_app_name(), active=True
    )
    return {"endpoint": endpoint}


@bp.get("/webhooks/<int:endpoint_id>/deliveries")
@bp.auth_required(auth)
@bp.input(s.DeliveriesQuery, location="query", arg_name="query")
@bp.output(s.WebhookDeliveriesOut)
@bp.doc(summary="An endpoint's deliveries, newest first", responses=ENDPOINT_READ_ERRORS)
def list_deliveries(endpoint_id: int, query: dict[str, Any]) -> Any:
    """One per event sent to it: pending, delivered or failed, with the last
    attempt's HTTP status or error and when it is tried next."""
    limit = HTTP_PAGE_SIZE if query["limit"] is None else query["limit"]
    deliveries = ledger().list_webhook_deliveries(
        endpoint_id=endpoint_id,
        app=reading_app(),
        status=query["status"],
        before_id=query["before_id"],
        max_rows=limit,
    )
    full = bool(deliveries) and len(deliveries) == limit
    return {
        "endpoint_id": endpoint_id,
        "deliveries": deliveries,
        "next_before_id": deliveries[-1].delivery_id if full else None,
    }


@bp.get("/webhooks/<int:endpoint_id>/attempts")
@bp.auth_required(auth)
@bp.input(s.AttemptsQuery, location="query", arg_name="query")
@bp.output(s.WebhookAttemptsOut)
@bp.doc(
    summary="An endpoint's delivery log: every attempt, newest first",
    responses=ENDPOINT_READ_ERRORS,
)
def list_attempts(endpoint_id: int, query: dict[str, Any]) -> Any:
    limit = HTTP_PAGE_SIZE if query["limit"] is None else query["limit"]
    attempts = ledger().list_webhook_attempts(
        endpoint_id=endpoint_id, app=reading_app(), event_id=query["event_id"], max_rows=limit
    )
    return {"endpoint_id": endpoint_id, "attempts": attempts}


@bp.post("/webhooks/resend")
@bp.auth_required(auth)
@bp.input(s.ResendIn, arg_name="body")
@bp.output(s.WebhookDeliveriesResent, description="the deliveries, due now")
@bp.doc(
    summary="Send an event again to the app's endpoints it was sent to",
    responses={**WRITE_ERRORS, 404: "the event was not sent to such an endpoint"},
)
def resend(body: dict[str, Any]) -> Any:
    """Each delivery of the event (delivered, failed or pending; endpoint_id:
    that endpoint's only) is due now with a new horizon, under the same
    webhook-id. An attempt in flight is left to finish."""
    deliveries = ledger().resend_webhook_event(
        event_id=body["event_id"], app=current_app_name(), endpoint_id=body["endpoint_id"]
    )
    return {"deliveries": deliveries}
