"""HTTP routes of the outputs resource (admins only); the outputs themselves run in `appliance outputs`."""

from __future__ import annotations

from litestar import Controller, delete, get, post, put
from litestar.params import JSONBody

from appliance.caller import require_admin
from appliance.dependencies import DB, Caller, Id, Settings
from appliance.errors import NotFound
from appliance.outputs import service, tester, trust
from appliance.outputs.schemas import (
    ClientCertificateAdd,
    ClientCertificateRead,
    OutputRead,
    OutputTestResult,
    OutputWrite,
)


class OutputsController(Controller):
    path = "/outputs"
    tags = ["outputs"]

    @get("/", operation_id="listOutputs", sync_to_thread=True)
    def list_outputs(self, db: DB, user: Caller, config: Settings) -> list[OutputRead]:
        """Every output with its status (connected, backlog, dropped, last delivery, last error)."""
        return service.list_outputs(db, config, user)

    @post("/", operation_id="createOutput", sync_to_thread=True, status_code=201)
    def create(self, data: JSONBody[OutputWrite], db: DB, user: Caller, config: Settings) -> OutputRead:
        return service.create_output(db, config, data, user)

    @get("/{output_id:int}", operation_id="getOutput", sync_to_thread=True)
    def get_output(self, output_id: Id, db: DB, user: Caller, config: Settings) -> OutputRead:
        return service.get_output(db, config, output_id, user)

    @put("/{output_id:int}", operation_id="putOutput", sync_to_thread=True)
    def put_output(
        self, output_id: Id, data: JSONBody[OutputWrite], db: DB, user: Caller, config: Settings
    ) -> OutputRead:
        """Replaces name, enabled and settings; a secret left out (or null) keeps the stored one."""
        return service.replace_output(db, config, output_id, data, user)

    @delete("/{output_id:int}", operation_id="deleteOutput", sync_to_thread=True, status_code=204)
    def delete_output(self, output_id: Id, db: DB, user: Caller) -> None:
        """The output and its undelivered messages."""
        service.delete_output(db, output_id, user)

    @post("/{output_id:int}/test", operation_id="testOutput", sync_to_thread=True, status_code=200)
    def test(self, output_id: Id, db: DB, user: Caller, config: Settings) -> OutputTestResult:
        """One real exchange with the stored settings (a test message); `ok` and what happened, in words."""
        require_admin(user)
        found = service.stored_outputs(db, output_id)
        if not found:
            raise NotFound(f"output {output_id} not found")
        return tester.run_test(config, found[0])

    # --- the client certificates an OPC UA output trusts --------------------------------------------------

    @get("/{output_id:int}/certificates", operation_id="listOutputCertificates", sync_to_thread=True)
    def list_certificates(self, output_id: Id, db: DB, user: Caller) -> list[ClientCertificateRead]:
        """Trusted client certificates, then the latest ones the server refused (an admin may trust those)."""
        return trust.list_certificates(db, output_id, user)

    @post(
        "/{output_id:int}/certificates",
        operation_id="addOutputCertificate",
        sync_to_thread=True,
        status_code=201,
    )
    def add_certificate(
        self, output_id: Id, data: JSONBody[ClientCertificateAdd], db: DB, user: Caller
    ) -> ClientCertificateRead:
        """Trust a client application certificate (PEM, or base64 of the DER file)."""
        return trust.add_certificate(db, output_id, data, user)

    @post(
        "/{output_id:int}/certificates/{certificate_id:int}/trust",
        operation_id="trustOutputCertificate",
        sync_to_thread=True,
        status_code=200,
    )
    def trust_certificate(
        self, output_id: Id, certificate_id: Id, db: DB, user: Caller
    ) -> ClientCertificateRead:
        """Trust a certificate the server refused."""
        return trust.trust_certificate(db, output_id, certificate_id, user)

    @delete(
        "/{output_id:int}/certificates/{certificate_id:int}",
        operation_id="deleteOutputCertificate",
        sync_to_thread=True,
        status_code=204,
    )
    def delete_certificate(self, output_id: Id, certificate_id: Id, db: DB, user: Caller) -> None:
        """Refuse this certificate again from the next secure channel on."""
        trust.remove_certificate(db, output_id, certificate_id, user)


__all__ = ["OutputsController"]
