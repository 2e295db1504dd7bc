"""JupyterHub configuration of the research workbench, built from the workbench YAML.

Run with ``jupyterhub -f hub_config/jupyterhub_config.py``. Everything that differs between
the demo, CI and a region deployment comes from the environment:

  WORKBENCH_CONFIG          the workbench YAML (projects, profiles, approvals, archive)
  WORKBENCH_DATA_DIR        storage root (homes, project workspaces, gateway state)
  WORKBENCH_HUB_PORT        public port of the proxy (default 8000), bound to 127.0.0.1
  WORKBENCH_HUB_API_PORT    the hub's internal port (default 8081)
  WORKBENCH_PROXY_API_PORT  the proxy's API port (default 8001)
  WORKBENCH_GATEWAY_PORT    the sample gateway service's port (default 8090)
  WORKBENCH_QUOTA_PORT      the quota service's port (default 8091)
  WORKBENCH_QUOTA_DB        the quota ledger's SQLAlchemy URL (default: SQLite in the data dir;
                            'postgresql://user:pw@host/db' for PostgreSQL); WORKBENCH_QUOTA=0 is off
  WORKBENCH_SPAWNER         'local' (default) or 'nomad'
  WORKBENCH_PASSWORD_FILE   demo passwords: 'user:<pw>' and 'admin:<pw>' lines
  WORKBENCH_EXTRA_CONFIG    a further config file loaded last (identity provider, Nomad, TLS)
"""

import os
import sys
from pathlib import Path

from hub_config.loader import ConfigError, config_path, load_config
from hub_config.storage import default_data_dir

c = get_config()  # noqa: F821 - provided by JupyterHub when it reads this file

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY = sys.executable

# Fail at start, with the file's line, if the YAML is wrong (ConfigError says where).
WORKBENCH_YAML = str(config_path().resolve())
try:
    workbench = load_config(WORKBENCH_YAML)
except ConfigError as error:
    print(f"JupyterHub not started: {error}", file=sys.stderr)
    raise SystemExit(2) from None

data_dir = default_data_dir().resolve()
hub_dir = data_dir / "hub"
hub_dir.mkdir(parents=True, exist_ok=True, mode=0o700)


def _port(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


hub_port = _port("WORKBENCH_HUB_PORT", 8000)
gateway_port = _port("WORKBENCH_GATEWAY_PORT", 8090)
public_url = f"http://127.0.0.1:{hub_port}"

# Network: everything on loopback; a deployment puts TLS termination in front of the proxy.
c.JupyterHub.bind_url = public_url
c.JupyterHub.hub_bind_url = f"http://127.0.0.1:{_port('WORKBENCH_HUB_API_PORT', 8081)}"
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{_port('WORKBENCH_PROXY_API_PORT', 8001)}"
chp = ROOT / "node_modules" / ".bin" / "configurable-http-proxy"
c.ConfigurableHTTPProxy.command = [str(chp) if chp.exists() else "configurable-http-proxy"]
c.ConfigurableHTTPProxy.pid_file = str(hub_dir / "proxy.pid")

c.JupyterHub.db_url = f"sqlite:///{hub_dir / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(hub_dir / "cookie_secret")
c.JupyterHub.allow_named_servers = True
c.JupyterHub.named_server_limit_per_user = 3
c.JupyterHub.cleanup_servers = os.environ.get("WORKBENCH_CLEANUP_SERVERS", "1") == "1"

# People: members and admins come from the YAML.
c.Authenticator.admin_users = set(workbench.admins)
c.JupyterHub.authenticator_class = "hub_config.auth.WorkbenchDemoAuthenticator"
password_file = os.environ.get("WORKBENCH_PASSWORD_FILE", str(data_dir / "secrets" / "demo-passwords"))
if Path(password_file).exists():
    passwords = dict(
        line.split(":", 1) for line in Path(password_file).read_text().splitlines() if ":" in line
    )
    c.SharedPasswordAuthenticator.user_password = passwords.get("user", "")
    c.SharedPasswordAuthenticator.admin_password = passwords.get("admin", "")

# Servers.
spawner_kind = os.environ.get("WORKBENCH_SPAWNER", "local")
if spawner_kind == "nomad":
    c.JupyterHub.spawner_class = "spawners.nomad.spawner.NomadSpawner"
    # Jobs must not inherit the hub's environment; Nomad address, token, hub_connect_url
    # and TLS come from WORKBENCH_EXTRA_CONFIG (see docs/nomad.md).
    c.NomadSpawner.env_keep = []
else:
    c.JupyterHub.spawner_class = "spawners.local.LocalWorkbenchSpawner"
    c.LocalWorkbenchSpawner.local_gpus = int(os.environ.get("WORKBENCH_LOCAL_GPUS", "0"))
c.Spawner.workbench_config_file = WORKBENCH_YAML
c.Spawner.data_dir = str(data_dir)
c.Spawner.gateway_url = f"{public_url}/services/sample-gateway/"
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 60
c.Spawner.env_keep = ["PATH", "LANG", "LC_ALL", "PYTHONPATH", "VIRTUAL_ENV", "JUPYTER_PATH"]

# The sample gateway: the only part that holds the archive connection.
c.JupyterHub.services = [
    {
        "name": "sample-gateway",
        "display": False,
        "url": f"http://127.0.0.1:{gateway_port}",
        "command": [PY, "-m", "services.sample_gateway"],
        "cwd": str(ROOT),
        "environment": {
            "WORKBENCH_CONFIG": WORKBENCH_YAML,
            "WORKBENCH_DATA_DIR": str(data_dir),
            "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
        },
        "oauth_no_confirm": True,
    }
]
c.JupyterHub.load_roles = [
    {
        # Tokens of user servers: their own activity and the gateway, nothing else.
        "name": "server",
        "scopes": [
            "users:activity!user",
            "access:servers!server",
            "access:services!service=sample-gateway",
        ],
    },
    {
        "name": "user",
        "scopes": ["self", "access:services!service=sample-gateway"],
    },
]

# Quotas of loaned compute (services/quota): every start is reserved against the project's
# budget in the ledger (the spawner talks to it directly: atomic and independent of the
# service); the spawn form shows what is left; the quota service runs the admin pages, the
# API and the enforcer (warnings at 80/95 %, stops after the grace period at 100 %, through
# the hub API); the hub's pages show each user's notices.
if os.environ.get("WORKBENCH_QUOTA", "1") != "0":
    from services.quota.announcement import HubAnnouncement
    from services.quota.app import ADMIN_SCOPE, default_db_url
    from services.quota.spawning import project_notes

    quota_db = os.environ.get("WORKBENCH_QUOTA_DB") or default_db_url(str(data_dir))
    quota_port = _port("WORKBENCH_QUOTA_PORT", 8091)
    c.Spawner.quota_db_url = quota_db
    c.Spawner.project_notes_hook = project_notes
    c.JupyterHub.template_vars = {"announcement": HubAnnouncement(quota_db, WORKBENCH_YAML)}
    c.JupyterHub.custom_scopes = {
        ADMIN_SCOPE: {"description": "See every project's compute usage and change budgets."},
    }
    c.JupyterHub.services.append(
        {
            "name": "quota",
            "display": True,  # listed in the hub's Services menu for those who may open it
            "url": f"http://127.0.0.1:{quota_port}",
            "command": [PY, "-m", "services.quota"],
            "cwd": str(ROOT),
            "environment": {
                "WORKBENCH_CONFIG": WORKBENCH_YAML,
                "WORKBENCH_DATA_DIR": str(data_dir),
                "WORKBENCH_QUOTA_DB": quota_db,
                "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
                **{k: v for k, v in os.environ.items() if k.startswith("WORKBENCH_QUOTA_")},
            },
            "oauth_no_confirm": True,
            "oauth_client_allowed_scopes": [ADMIN_SCOPE],
        }
    )
    c.JupyterHub.load_roles += [
        {
            # The enforcer: list servers, stop those over budget; nothing else.
            "name": "quota-service",
            "services": ["quota"],
            "scopes": ["list:users", "read:users:name", "read:servers", "servers"],
        },
        {"name": "quota-admin", "users": sorted(workbench.admins), "scopes": [ADMIN_SCOPE]},
    ]
    for role in c.JupyterHub.load_roles:
        if role["name"] in {"user", "server"}:
            # Everyone reads their own projects' budgets and notices (JupyterLab shows them).
            role["scopes"].append("access:services!service=quota")
    # JupyterLab shows the notices (extensions/quota_notices): an editable checkout's copy of
    # its labextension and server-extension switch are found through JUPYTER_PATH and
    # JUPYTER_CONFIG_PATH, an installed one in <prefix>/share and <prefix>/etc.
    from extensions.quota_notices import jupyter_config_dir, jupyter_data_dir

    def _prepend(name: str, path: Path) -> str:
        return os.pathsep.join(filter(None, [str(path), os.environ.get(name, "")]))

    c.Spawner.environment.update({
        "WORKBENCH_QUOTA_URL": f"{public_url}/services/quota/",
        "JUPYTER_PATH": _prepend("JUPYTER_PATH", jupyter_data_dir()),
        "JUPYTER_CONFIG_PATH": _prepend("JUPYTER_CONFIG_PATH", jupyter_config_dir()),
    })

extra = os.environ.get("WORKBENCH_EXTRA_CONFIG")
if extra:
    load_subconfig(extra)  # noqa: F821 - provided by traitlets
