"""The audit: histories rebuilt from on-chain events alone and verified (:mod:`.checks`), and the
report an auditor signs (:mod:`.report`)."""

from .checks import AuditEvent, Auditor, Check, EnclaveAnswers, ModelAudit, RequestAudit, render_model, render_request
from .report import render_html

__all__ = ["AuditEvent", "Auditor", "Check", "EnclaveAnswers", "ModelAudit", "RequestAudit", "render_html",
           "render_model", "render_request"]
