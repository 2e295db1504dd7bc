"""The airlock's one page (pure, escaped HTML): new request, your requests, review queue."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from html import escape

from .records import ExportRequest

_STYLE = """
<style>
body { font-family: system-ui, sans-serif; margin: 2rem; max-width: 70rem; color: #222; }
table { border-collapse: collapse; width: 100%; margin-bottom: 1.5rem; }
th, td { border-bottom: 1px solid #ddd; padding: .4rem .5rem; text-align: left; vertical-align: top; }
.status { font-weight: 600; } .refused, .rejected { color: #a00; } .exported { color: #070; }
.pending_review { color: #a60; } .flag { color: #a60; } .refuse { color: #a00; }
.notice { padding: .6rem; background: #eef6ee; } .error { padding: .6rem; background: #fbeaea; }
textarea, input[type=text] { width: 100%; } form.review { margin-top: .4rem; }
</style>
"""


def _findings(record: ExportRequest) -> str:
    if not record.findings:
        return "<span class='muted'>no findings</span>"
    items = "".join(
        f"<li class='{escape(f.get('severity', ''))}'>{escape(f.get('severity', ''))}: "
        f"{escape(f.get('message', ''))}</li>"
        for f in record.findings
    )
    return f"<ul class='findings'>{items}</ul>"


def _row(record: ExportRequest, review_form: str) -> str:
    files = ", ".join(escape(f.path) for f in record.files[:8])
    if len(record.files) > 8:
        files += f" and {len(record.files) - 8} more"
    review = ""
    if record.review:
        review = (f"<div>{escape(record.review.decision)} by {escape(record.review.by)}: "
                  f"{escape(record.review.reason)}</div>")
    where = f"<div>delivered to egress/{escape(record.delivery.path)}</div>" if record.delivery else ""
    return (
        f"<tr data-request='{escape(record.id)}'><td>{escape(record.id)}<br>{escape(record.created)}</td>"
        f"<td>{escape(record.project)}<br>{escape(record.requester)}</td>"
        f"<td>{files}<div class='muted'>{escape(record.note)}</div></td>"
        f"<td>{_findings(record)}</td>"
        f"<td><span class='status {escape(record.status)}'>{escape(record.status.replace('_', ' '))}"
        f"</span>{review}{where}{review_form}</td></tr>"
    )


def _review_form(record: ExportRequest, xsrf: str) -> str:
    ack = (
        "<label><input type='checkbox' name='acknowledge_flags' value='yes'> I have looked at "
        "the flagged files</label><br>" if record.flagged else ""
    )
    return (
        "<form method='post' class='review'>" + xsrf +
        f"<input type='hidden' name='action' value='review'>"
        f"<input type='hidden' name='request' value='{escape(record.id)}'>"
        "<input type='text' name='reason' placeholder='Reason (required)' required><br>" + ack +
        "<button name='decision' value='approve'>Approve</button> "
        "<button name='decision' value='reject'>Reject</button></form>"
    )


def airlock_page(
    *,
    user: str,
    projects: list[str],
    requests: Iterable[ExportRequest],
    may_review: Callable[[ExportRequest], bool],
    xsrf: str,
    prefix: str,
    message: str = "",
    error: str = "",
) -> str:
    requests = list(requests)
    options = "".join(f"<option value='{escape(p)}'>{escape(p)}</option>" for p in projects)
    new_form = (
        "<h2>New export request</h2>"
        "<p>Results leave the workbench only through this airlock: name files or folders of "
        "your project workspace (one per line). They are copied now, checked for identifying "
        "DICOM data, and a data steward approves or rejects them.</p>"
        "<form method='post' id='new-request'>" + xsrf +
        "<input type='hidden' name='action' value='request'>"
        f"<label>Project <select name='project'>{options}</select></label><br>"
        "<textarea name='paths' rows='4' placeholder='results/summary.csv'></textarea><br>"
        "<input type='text' name='note' placeholder='What is it, and where does it go?'><br>"
        "<button type='submit'>Request export</button></form>"
        if projects else ""
    )
    to_review = [r for r in requests if r.status == "pending_review" and may_review(r)]
    queue = ""
    if to_review:
        queue = ("<h2>Waiting for your review</h2><table id='review-queue'>" + _HEAD +
                 "".join(_row(r, _review_form(r, xsrf)) for r in to_review) + "</table>")
    others = [r for r in requests if r not in to_review]
    mine = ("<h2>Requests</h2><table id='requests'>" + _HEAD +
            "".join(_row(r, "") for r in others) + "</table>") if others else ""
    notice = f"<div class='notice'>{escape(message)}</div>" if message else ""
    problem = f"<div class='error'>{escape(error)}</div>" if error else ""
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Data egress airlock</title>"
        + _STYLE + "</head><body>"
        f"<h1>Data egress airlock</h1><p>Signed in as {escape(user)}. "
        f"<a href='{escape(prefix)}api/requests'>JSON</a></p>"
        + notice + problem + queue + new_form + mine + "</body></html>"
    )


_HEAD = ("<tr><th>Request</th><th>Project / by</th><th>Files</th><th>Checks</th>"
         "<th>Status</th></tr>")
