"""`GET /apiv1/models`: the models a job may name (msaas/models.py's catalogue), as gRPC's ListModels lists them."""

from __future__ import annotations

from flask import Blueprint, jsonify

from msaas.models import catalogue
from rest.backends import backends

blueprint = Blueprint("catalogue", __name__)


@blueprint.get("/apiv1/models")
def models():
    return jsonify(models=catalogue(backends().settings.demucs_model))
