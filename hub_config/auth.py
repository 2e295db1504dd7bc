"""Demo login: shared passwords, but only for people the workbench YAML names.

Production deployments set the region's identity provider (OAuthenticator, LDAP) in the
extra configuration file; membership and admin rights still come from the YAML.

Project members, stewards and admins may always log in. Teaching-session students only
inside their session's window, teachers until its end (:mod:`services.teaching.rules`).
The rule is asked at each login and at each auth refresh (``auth_refresh_age``), so a
student's browser session ends with the window without anyone acting.
"""

from __future__ import annotations

import datetime as dt

from jupyterhub.authenticators.shared import SharedPasswordAuthenticator
from traitlets import Unicode, default

from services.teaching.rules import login_decision

from .loader import cached_config


class WorkbenchDemoAuthenticator(SharedPasswordAuthenticator):
    workbench_config_file = Unicode(
        "", config=True, help="Workbench YAML; empty means $WORKBENCH_CONFIG or the demo file."
    )

    @default("any_allow_config")
    def _the_yaml_allows(self) -> bool:
        """Who may log in is the workbench YAML's (check_allowed), not allowed_users: without
        this JupyterHub warns at every start that nobody may be able to log in."""
        return True

    def _decision(self, username: str):  # noqa: ANN202
        # Re-read on each login so people added to a project can log in without a restart.
        config = cached_config(self.workbench_config_file or None, log=self.log)
        return login_decision(config, username, dt.datetime.now(dt.timezone.utc))

    def check_allowed(self, username: str, authentication=None) -> bool:  # noqa: ANN001
        decision = self._decision(username)
        if not decision.allowed and decision.message:
            self.log.info("login of %s refused: %s", username, decision.message)
        return decision.allowed

    async def refresh_user(self, user, handler=None):  # noqa: ANN001, ANN201 - JupyterHub's signature
        """False once the user may no longer log in: the hub then asks for a fresh login,
        which :meth:`check_allowed` refuses (a session that ended, a removed member)."""
        return True if self._decision(user.name).allowed else False
