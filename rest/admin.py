"""The admin routes (`/apiv1/admin/...`), behind an admin key: the dead letters, listed, inspected, requeued or
purged, and every tenant's usage. A tenant's key is refused here (401); a service with no keys at all lets anyone in,
as it does everywhere."""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from msaas.jobqueue import DeadLetter
from rest.backends import backends, tenant

blueprint = Blueprint("admin", __name__, url_prefix="/apiv1/admin")
DEAD_PAGE = 50


@blueprint.before_request
def admins_only():
    backends().access.require_admin(tenant())


@blueprint.get("/dead")
def dead_letters():
    """Dead letters, oldest first, a page at a time (`next` is the `cursor` of the next page)."""
    limit = request.args.get("limit", str(DEAD_PAGE))
    letters, cursor = backends().admin.dead_letters(request.args.get("cursor"),
                                                    int(limit) if limit.isdigit() else DEAD_PAGE)
    return jsonify(dead=[letter.as_json() for letter in letters], next=cursor)


@blueprint.get("/dead/<entry_id>")
def dead_letter(entry_id: str):
    letter: DeadLetter = backends().admin.dead_letter(entry_id)
    return jsonify(letter.as_json())


@blueprint.post("/dead/<entry_id>/retry")
def retry(entry_id: str):
    backends().admin.retry(entry_id)
    return jsonify(id=entry_id, reason="Job queued again")


@blueprint.delete("/dead/<entry_id>")
def purge(entry_id: str):
    return jsonify(purged=backends().admin.purge(entry_id))


@blueprint.delete("/dead")
def purge_all():
    return jsonify(purged=backends().admin.purge(None))


@blueprint.get("/usage")
def usage():
    """Every tenant's usage: songs submitted, audio seconds separated, separation CPU-seconds."""
    return jsonify(tenants=backends().admin.usage())
