"""Start the ``atm/datarun`` deployment for a datarun, over Prefect's REST API.

Plain HTTP (urllib), not Prefect's client: ``atm_core`` never imports Prefect, and the
dashboard runs where Prefect is not installed. The server is the one ``PREFECT_API_URL`` names
(with ``PREFECT_API_KEY`` as a bearer token when set, as on Prefect Cloud). The flow run gets
only ``datarun_id``: its worker opens the ModelHub of its own environment, which must be this
dashboard's.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from atm_core.errors import ATMError

DEPLOYMENT = "atm/datarun"


class PrefectServerError(ATMError):
    """The Prefect server could not be reached, lacks the deployment, or refused the run."""


def without_credentials(url: str) -> str:
    """``url`` with any ``user:password@`` removed, for messages."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


@dataclass(frozen=True)
class PrefectServer:
    api_url: str
    api_key: str | None = field(default=None, repr=False)
    ui_url: str | None = None
    timeout: float = 10.0

    @classmethod
    def from_environment(cls) -> PrefectServer | None:
        """The server ``PREFECT_API_URL`` names; None when it is unset."""
        url = os.environ.get("PREFECT_API_URL", "").strip().rstrip("/")
        if not url:
            return None
        ui = os.environ.get("PREFECT_UI_URL", "").strip().rstrip("/") or None
        return cls(url, os.environ.get("PREFECT_API_KEY") or None, ui)

    @property
    def where(self) -> str:
        return without_credentials(self.api_url)

    def datarun_deployment(self) -> dict[str, Any]:
        """The ``atm/datarun`` deployment (read before anything is written)."""
        try:
            return self._call("GET", f"/deployments/name/{DEPLOYMENT}")
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise PrefectServerError(
                    f"the Prefect server at {self.where} has no deployment {DEPLOYMENT}: "
                    "register it with `prefect --no-prompt deploy --all`"
                ) from None
            raise self._refused(exc, "reading the deployment") from None

    def start_datarun(self, deployment: dict[str, Any], datarun_id: int) -> dict[str, Any]:
        """A new flow run of the deployment that works on ``datarun_id``."""
        try:
            run = self._call(
                "POST",
                f"/deployments/{deployment['id']}/create_flow_run",
                {"parameters": {"datarun_id": datarun_id}},
            )
        except urllib.error.HTTPError as exc:
            raise self._refused(exc, "creating a flow run") from None
        ui = self.ui_url or self.api_url.removesuffix("/api")
        return {
            "id": run["id"],
            "name": run.get("name"),
            "deployment": DEPLOYMENT,
            "url": f"{without_credentials(ui)}/runs/flow-run/{run['id']}",
        }

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        headers = {"Accept": "application/json", "Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(
            self.api_url + path,
            data=None if body is None else json.dumps(body).encode(),
            headers=headers,
            method=method,
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                return json.loads(answer.read() or b"null")
        except urllib.error.HTTPError:
            raise
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise PrefectServerError(
                f"cannot reach the Prefect server at {self.where}: {reason}"
            ) from None

    def _refused(self, exc: urllib.error.HTTPError, doing: str) -> PrefectServerError:
        try:
            detail = json.loads(exc.read() or b"{}").get("detail", "")
        except ValueError:
            detail = ""
        return PrefectServerError(
            f"the Prefect server at {self.where} refused {doing} ({exc.code}): {detail}".rstrip(
                ": "
            )
        )
