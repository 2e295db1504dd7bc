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
  WORKBENCH_AIRLOCK_PORT    the data egress airlock service's port (default 8092)
  WORKBENCH_IDLE_TIMEOUT    idle-culler timeout in seconds for profiles without
                            idle_timeout_minutes (default 3600; 0 turns culling off)
  WORKBENCH_TEACHING_INTERVAL  seconds between the teaching reconciler's rounds (default 30)
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
c.Spawner.gateway_url = f"{public_url}/services/sample-gateway/" if workbench.archive else ""
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 60
c.Spawner.env_keep = ["PATH", "LANG", "LC_ALL", "PYTHONPATH", "VIRTUAL_ENV", "JUPYTER_PATH"]

# The sample gateway: the only part that holds the archive connection (none without one).
c.JupyterHub.services = []
gateway_scopes = []
if workbench.archive is not None:
    c.JupyterHub.services.append(
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
    )
    gateway_scopes = ["access:services!service=sample-gateway"]
c.JupyterHub.load_roles = [
    {
        # Tokens of user servers: their own activity and the gateway, nothing else.
        "name": "server",
        "scopes": [
            "users:activity!user",
            "access:servers!server",
            *gateway_scopes,
        ],
    },
    {
        "name": "user",
        "scopes": ["self", *gateway_scopes],
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
    # Teaching sessions are charged as accounts 'session:<id>' with their window budgets.
    from services.teaching.quota import teaching_accounts

    c.JupyterHub.template_vars = {
        "announcement": HubAnnouncement(quota_db, WORKBENCH_YAML, extra_accounts=teaching_accounts),
    }
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
                "WORKBENCH_QUOTA_EXTRA_ACCOUNTS": "services.teaching.quota:teaching_accounts",
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

# The data catalogue's airlock (services/airlock): export requests from the project workspace,
# identifier checks, review by the YAML's data stewards, delivery to $WORKBENCH_DATA_DIR/egress,
# all audited. Everyone may open it; reviewing needs the custom scope the stewards get.
from services.airlock.app import REVIEW_SCOPE  # noqa: E402

airlock_port = _port("WORKBENCH_AIRLOCK_PORT", 8092)
c.JupyterHub.custom_scopes.update({
    REVIEW_SCOPE: {"description": "Approve or reject data export requests (data stewards)."},
})
c.JupyterHub.services.append(
    {
        "name": "airlock",
        "display": True,
        "url": f"http://127.0.0.1:{airlock_port}",
        "command": [PY, "-m", "services.airlock"],
        "cwd": str(ROOT),
        "environment": {
            "WORKBENCH_CONFIG": WORKBENCH_YAML,
            "WORKBENCH_DATA_DIR": str(data_dir),
            "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
        },
        "oauth_no_confirm": True,
        "oauth_client_allowed_scopes": [REVIEW_SCOPE],
    }
)
stewards = set(workbench.data_stewards).union(*(p.stewards for p in workbench.projects))
c.JupyterHub.load_roles.append(
    {"name": "airlock-steward", "users": sorted(stewards), "scopes": [REVIEW_SCOPE]}
)
for role in c.JupyterHub.load_roles:
    if role["name"] in {"user", "server"}:
        role["scopes"].append("access:services!service=airlock")
c.Spawner.environment.update({"WORKBENCH_AIRLOCK_URL": f"{public_url}/services/airlock/"})

# Teaching sessions (services/teaching): a group per session holding its students, a role per
# session giving its teachers their students' servers and nothing else; the reconciler keeps
# the groups and stops the servers at the end of each window. Login follows the window
# (hub_config/auth.py); refreshed every auth_refresh_age seconds.
import datetime as _dt  # noqa: E402

from services.teaching.rules import hub_groups, hub_roles  # noqa: E402

c.JupyterHub.load_groups = hub_groups(workbench, _dt.datetime.now(_dt.timezone.utc))
c.JupyterHub.load_roles += hub_roles(workbench)
c.Authenticator.auth_refresh_age = 120
c.JupyterHub.services.append(
    {
        "name": "teaching",
        "command": [PY, "-m", "services.teaching"],
        "cwd": str(ROOT),
        "environment": {
            "WORKBENCH_CONFIG": WORKBENCH_YAML,
            "WORKBENCH_DATA_DIR": str(data_dir),
            "WORKBENCH_TEACHING_INTERVAL": os.environ.get("WORKBENCH_TEACHING_INTERVAL", "30"),
            "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
        },
    }
)
c.JupyterHub.load_roles.append(
    {
        "name": "teaching-service",
        "services": ["teaching"],
        "scopes": ["list:users", "read:users", "read:servers", "servers", "list:groups", "groups"],
    }
)

# Idle culling (services/culler): jupyterhub-idle-culler with each profile's
# idle_timeout_minutes; servers load extensions.busy_activity, so a busy kernel counts as
# activity and is never culled mid-computation.
idle_timeout = int(os.environ.get("WORKBENCH_IDLE_TIMEOUT", "3600"))
if idle_timeout > 0:
    c.JupyterHub.services.append(
        {
            "name": "idle-culler",
            "command": [PY, "-m", "services.culler", f"--timeout={idle_timeout}"],
            "cwd": str(ROOT),
            "environment": {
                "WORKBENCH_CONFIG": WORKBENCH_YAML,
                "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
            },
        }
    )
    c.JupyterHub.load_roles.append(
        {
            "name": "idle-culler",
            "services": ["idle-culler"],
            "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
        }
    )

extra = os.environ.get("WORKBENCH_EXTRA_CONFIG")
if extra:
    load_subconfig(extra)  # noqa: F821 - provided by traitlets
