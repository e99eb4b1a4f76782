"""A minimal HTTPS client for the few API calls bootstrap needs.

Bootstrap only probes health endpoints and creates/lists a handful of objects, so it
talks to the apiserver directly with the admin client cert rather than importing a full
Kubernetes client or requiring kubectl.
"""

from __future__ import annotations

import http.client
import json
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class ApiError(Exception):
    def __init__(self, status: int, body: str):
        super().__init__(f"HTTP {status}: {body[:500]}")
        self.status = status
        self.body = body


@dataclass
class ApiClient:
    host: str
    port: int
    ca_cert: Path | None = None  # None: don't verify (in-memory self-signed serving certs)
    client_cert: Path | None = None
    client_key: Path | None = None
    timeout: float = 5.0

    def _context(self) -> ssl.SSLContext:
        if self.ca_cert is None:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        else:
            context = ssl.create_default_context(cafile=str(self.ca_cert))
        if self.client_cert is not None:
            context.load_cert_chain(str(self.client_cert), str(self.client_key))
        return context

    def request(self, method: str, path: str, body: Any = None,
                content_type: str = "application/json") -> tuple[int, str]:
        connection = http.client.HTTPSConnection(
            self.host, self.port, context=self._context(), timeout=self.timeout
        )
        try:
            payload = None if body is None else json.dumps(body)
            headers = {"Content-Type": content_type} if payload is not None else {}
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            return response.status, response.read().decode("utf-8", "replace")
        finally:
            connection.close()

    def get_json(self, path: str) -> Any:
        status, text = self.request("GET", path)
        if status != 200:
            raise ApiError(status, text)
        return json.loads(text)

    def create(self, path: str, obj: dict) -> bool:
        """POST `obj`; False if it already exists."""
        status, text = self.request("POST", path, obj)
        if status == 409:
            return False
        if status not in (200, 201):
            raise ApiError(status, text)
        return True

    def apply(self, obj: dict, field_manager: str = "strata-dev") -> None:
        """Server-side apply of `obj` (JSON is valid YAML), owning the fields it names."""
        api_version, kind = obj["apiVersion"], obj["kind"]
        group_path = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
        plural = _PLURALS.get(kind) or kind.lower() + "s"
        namespace = obj["metadata"].get("namespace")
        scope = f"/namespaces/{namespace}" if namespace else ""
        path = (f"{group_path}{scope}/{plural}/{obj['metadata']['name']}"
                f"?fieldManager={field_manager}&force=true")
        status, text = self.request("PATCH", path, obj, "application/apply-patch+yaml")
        if status not in (200, 201):
            raise ApiError(status, text)


# Kinds whose plural is not `<kind>s` in lower case.
_PLURALS = {"StorageClass": "storageclasses", "APIService": "apiservices"}
