"""Demo login: shared passwords, but only for people the workbench YAML names.

Production deployments set the region's identity provider (OAuthenticator, LDAP) in the
extra configuration file; membership and admin rights still come from the YAML.
"""

from __future__ import annotations

from jupyterhub.authenticators.shared import SharedPasswordAuthenticator
from traitlets import Unicode

from .loader import cached_config


class WorkbenchDemoAuthenticator(SharedPasswordAuthenticator):
    workbench_config_file = Unicode(
        "", config=True, help="Workbench YAML; empty means $WORKBENCH_CONFIG or the demo file."
    )

    def check_allowed(self, username: str, authentication=None) -> bool:  # noqa: ANN001
        # Re-read on each login so people added to a project can log in without a restart.
        config = cached_config(self.workbench_config_file or None, log=self.log)
        return username in config.all_users()
