"""The spawn page's options form, rendered from the user's choices (pure, escaped HTML).

Only the user's own projects appear, each with the profiles it may use. Projects that
cannot start (an expired approval) are shown disabled with the reason, so the researcher
learns why before clicking. Other parts of the workbench can add a line per project (the
quota service adds the remaining budget) and mark profiles unavailable on this hub.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

from hub_config.model import Profile

from .selection import Choice

_SCRIPT = """
<script>
(function () {
  var project = document.getElementById("wb-project");
  if (!project) { return; }
  function sync() {
    var chosen = project.options[project.selectedIndex];
    var allowed = (chosen && chosen.dataset.profiles || "").split(" ");
    var first = null;
    document.querySelectorAll(".wb-profile").forEach(function (el) {
      var input = el.querySelector("input");
      var ok = allowed.indexOf(input.value) >= 0 && !el.classList.contains("wb-unavailable");
      el.style.display = allowed.indexOf(input.value) >= 0 ? "" : "none";
      input.disabled = !ok;
      if (!ok) { input.checked = false; }
      if (ok && first === null) { first = input; }
    });
    var checked = document.querySelector(".wb-profile input:checked");
    if (!checked && first) { first.checked = true; }
    document.querySelectorAll(".wb-project-note").forEach(function (el) {
      el.style.display = el.dataset.project === project.value ? "" : "none";
    });
  }
  project.addEventListener("change", sync);
  sync();
})();
</script>
"""


# The hub's own Start button: nothing can start, so it must not invite a click.
_DISABLE_START = """
<script>
(function () {
  function disableStart() {
    document.querySelectorAll("#spawn_form button[type=submit], #spawn_form input[type=submit]")
      .forEach(function (button) { button.disabled = true; });
  }
  // The hub's template puts its button after this form's content.
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", disableStart);
  } else { disableStart(); }
})();
</script>
"""


def render_options_form(
    choices: list[Choice],
    *,
    project_notes: Mapping[str, list[str]] | None = None,
    unavailable_profiles: Mapping[str, str] | None = None,
    selected_project: str | None = None,
    selected_profile: str | None = None,
    elsewhere: Sequence[tuple[str, str]] = (),
) -> str:
    """``elsewhere``: (label, url) of the pages a user without a project works on (a data
    steward's airlock, an admin's pages), offered instead of a form with nothing to start."""
    project_notes = project_notes or {}
    unavailable_profiles = unavailable_profiles or {}
    if not choices and elsewhere:
        links = "".join(f'<li><a href="{escape(url)}">{escape(label)}</a></li>' for label, url in elsewhere)
        return (
            '<div class="alert alert-info" id="wb-no-project">You are not a member of any project, '
            f"so there is no server to start here. Your work is on these pages:<ul>{links}</ul></div>"
            + _DISABLE_START
        )
    if not choices:
        return (
            '<div class="alert alert-warning" id="wb-no-project">You are not a member of any '
            "project yet. Ask the workbench admins to add you to an approved project.</div>"
            + _DISABLE_START
        )
    usable = [c for c in choices if c.unavailable is None]
    if not usable:
        return (
            '<div class="workbench-options" id="wb-no-project">'
            + "".join(f'<div class="alert alert-warning wb-refusal">{escape(str(c.unavailable))}</div>'
                      for c in choices)
            + "<p>None of your projects can start a server now.</p></div>"
            + _DISABLE_START
        )
    if selected_project not in {c.project.id for c in usable}:
        selected_project = usable[0].project.id if usable else None

    options = []
    for choice in choices:
        project = choice.project
        label = f"{project.title} ({project.id})"
        if choice.unavailable:
            label += f" - {choice.unavailable_label}"
        attrs = [
            f'value="{escape(project.id)}"',
            f'data-profiles="{escape(" ".join(p.slug for p in choice.profiles))}"',
        ]
        if choice.unavailable:
            attrs.append("disabled")
        if project.id == selected_project:
            attrs.append("selected")
        options.append(f"<option {' '.join(attrs)}>{escape(label)}</option>")

    notes = []
    for choice in choices:
        lines = list(choice.notes) or [
            f"Approval {choice.project.approval.reference}, valid until "
            f"{choice.project.approval.expires.isoformat()}."
        ]
        lines.extend(project_notes.get(choice.project.id, []))
        body = "".join(f"<div>{escape(line)}</div>" for line in lines)
        notes.append(
            f'<div class="wb-project-note help-block" data-project="{escape(choice.project.id)}">'
            f"{body}</div>"
        )
    refusals = [
        f'<div class="alert alert-warning wb-refusal">{escape(c.unavailable)}</div>'
        for c in choices
        if c.unavailable
    ]

    profiles: dict[str, Profile] = {}
    for choice in choices:
        for profile in choice.profiles:
            profiles.setdefault(profile.slug, profile)
    cards = []
    for slug, profile in profiles.items():
        why_not = unavailable_profiles.get(slug)
        checked = " checked" if slug == selected_profile and not why_not else ""
        extra = f'<div class="text-muted wb-why-not">{escape(why_not)}</div>' if why_not else ""
        css = "wb-profile radio" + (" wb-unavailable" if why_not else "")
        cards.append(
            f'<div class="{css}"><label>'
            f'<input type="radio" name="profile" value="{escape(slug)}"{checked}> '
            f"<strong>{escape(profile.name)}</strong>"
            f' <span class="text-muted">{escape(profile.description)}</span>'
            f"</label>{extra}</div>"
        )

    return (
        '<div class="workbench-options">'
        + "".join(refusals)
        + '<div class="form-group"><label for="wb-project">Project</label>'
        + '<select id="wb-project" name="project" class="form-select">'
        + "".join(options)
        + "</select>"
        + "".join(notes)
        + "</div>"
        + '<fieldset class="form-group"><legend>Compute profile</legend>'
        + "".join(cards)
        + "</fieldset></div>"
        + _SCRIPT
    )


def options_from_formdata(formdata: Mapping[str, list[str]]) -> dict[str, str]:
    """The hub posts form fields as lists; keep the two we know, as plain strings."""
    options = {}
    for key in ("project", "profile"):
        values = formdata.get(key) or []
        if values and values[0]:
            options[key] = values[0]
    return options
