"""The click CLI: flags and subcommands only; the work lives in the modules it calls."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from . import env_vars

F = TypeVar("F", bound=Callable[..., Any])


def _exec_options(f: F) -> F:
    f = click.option(
        "--service-account",
        "service_account",
        multiple=True,
        metavar="EMAIL",
        help="Service account the client impersonates (Python and gcloud do not pass it otherwise).",
    )(f)
    f = click.option(
        "--policy",
        "policy",
        multiple=True,
        metavar="PATH",
        help=f"Policy file [default: ${env_vars.POLICY}, else /etc/iris-credexec/policy.toml].",
    )(f)
    return f


def _single(name: str, values: tuple[str, ...]) -> str | None:
    if len(values) > 1:
        from .errors import Code, CredexecError

        raise CredexecError(Code.REQUEST_INVALID, f"{name} was given {len(values)} times; give it once.")
    return values[0] if values else None


def _debug_printer(step: Any) -> None:
    mark = {True: "ok  ", False: "FAIL", None: "warn"}[step.ok]
    click.echo(f"[iris-credexec] {mark} {step.name}: {step.detail}", err=True)


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        from .version import describe

        click.echo(describe())
        ctx.exit(0)


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@_exec_options
@click.option("--debug", is_flag=True, help="Print each step to stderr (for people: clients must not see it).")
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Print version and commit.",
)
@click.pass_context
def cli(ctx: click.Context, policy: tuple[str, ...], service_account: tuple[str, ...], debug: bool) -> None:
    """Executable-sourced credential for Google Workload Identity Federation.

    Without a command, runs in executable mode: what Google's client libraries
    run from an external_account credential config. It prints one JSON response
    on stdout, exits 0 even on failure, and writes nothing to stderr unless
    --debug is given.
    """
    if ctx.invoked_subcommand is not None:
        return
    from .errors import CredexecError
    from .exec_mode import Invocation, Trace, answer
    from .response import Failure, write_stdout

    trace = Trace(on_step=_debug_printer if debug else None)
    try:
        invocation = Invocation(
            environ=os.environ,
            policy_flag=_single("--policy", policy),
            service_account_flag=_single("--service-account", service_account),
        )
    except CredexecError as exc:
        write_stdout(Failure.from_error(exc))
        return
    write_stdout(answer(invocation, trace))


@cli.command("inspect")
@_exec_options
@click.option("--audience", metavar="AUDIENCE", help=f"Audience to ask for [default: ${env_vars.AUDIENCE}].")
@click.option("--show-token", is_flag=True, help="Also print the raw token (it is a credential: handle with care).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def inspect_command(
    policy: tuple[str, ...], service_account: tuple[str, ...], audience: str | None, show_token: bool, as_json: bool
) -> None:
    """Run executable mode's checks and fetch, and report each step.

    Exit status 0 when every check passed, 1 when one failed.
    """
    from .inspect import run_inspect

    code = run_inspect(
        environ=os.environ,
        policy_flag=_single_or_usage("--policy", policy),
        service_account_flag=_single_or_usage("--service-account", service_account),
        audience_flag=audience,
        show_token=show_token,
        as_json=as_json,
    )
    sys.exit(code)


def _single_or_usage(name: str, values: tuple[str, ...]) -> str | None:
    if len(values) > 1:
        raise click.UsageError(f"{name} given more than once")
    return values[0] if values else None


@cli.group("cache")
def cache_group() -> None:
    """Look at or clear the token cache (never prints tokens)."""


def _open_cache(policy: str | None) -> Any:
    from .cache import CacheUnavailable, TokenCache
    from .errors import CredexecError
    from .policy import load, resolve_path

    configured = ""
    try:
        configured = load(resolve_path(policy, os.environ)).cache.dir
    except CredexecError as exc:
        click.echo(f"note: {exc} (using the default cache directory)", err=True)
    try:
        return TokenCache.open(configured, os.environ, create=False)
    except CacheUnavailable as exc:
        raise click.ClickException(str(exc)) from None


@cache_group.command("show")
@click.option("--policy", metavar="PATH", help="Policy whose [cache] dir to use.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def cache_show(policy: str | None, as_json: bool) -> None:
    """List cached tokens: key fields, subject, expiry, hash; never the token."""
    import time

    from .cache import describe_entry

    cache = _open_cache(policy)
    now = time.time()
    rows = [
        {"file": name, **(describe_entry(entry, now) if entry else {"unreadable": True})}
        for name, entry in cache.entries()
    ]
    if as_json:
        click.echo(json.dumps({"directory": cache.directory, "entries": rows}, indent=2))
        return
    click.echo(f"cache directory: {cache.directory}")
    if not rows:
        click.echo("(empty)")
    for row in rows:
        click.echo("- " + ", ".join(f"{k}={v}" for k, v in row.items()))


@cache_group.command("clear")
@click.option("--policy", metavar="PATH", help="Policy whose [cache] dir to use.")
def cache_clear(policy: str | None) -> None:
    """Remove every cached token of the calling user."""
    cache = _open_cache(policy)
    click.echo(f"removed {cache.clear()} file(s) from {cache.directory}")


@cli.command("config")
@click.option(
    "--audience",
    metavar="AUDIENCE",
    help="The workload identity provider (or give --project-number, --pool, --provider).",
)
@click.option("--project-number", metavar="NUMBER", help="Project number of the workload identity pool.")
@click.option("--pool", metavar="POOL", help="Workload identity pool id.")
@click.option("--provider", metavar="PROVIDER", help="Workload identity pool provider id.")
@click.option(
    "--service-account", metavar="EMAIL", help="Service account to impersonate (also written into the command)."
)
@click.option(
    "--service-account-token-lifetime-seconds",
    type=int,
    metavar="SECONDS",
    help="Lifetime of the impersonated token (600-43200).",
)
@click.option("--subject-token-type", type=click.Choice(["id_token", "jwt"]), default="id_token", show_default=True)
@click.option("--policy", metavar="PATH", help="Policy path to write into the command (--policy).")
@click.option(
    "--executable", metavar="PATH", help="Absolute path of iris-credexec inside the task [default: this program]."
)
@click.option("--executable-timeout-millis", type=int, default=30000, show_default=True, help="5000-120000.")
@click.option("--executable-output-file", metavar="PATH", help="Where clients cache the executable's response.")
@click.option("--output-file", metavar="PATH", help="Write the config here instead of stdout.")
def config_command(
    audience: str | None,
    project_number: str | None,
    pool: str | None,
    provider: str | None,
    service_account: str | None,
    service_account_token_lifetime_seconds: int | None,
    subject_token_type: str,
    policy: str | None,
    executable: str | None,
    executable_timeout_millis: int,
    executable_output_file: str | None,
    output_file: str | None,
) -> None:
    """Write an external_account credential config that runs iris-credexec.

    The command is an absolute path and flags with no quotes, spaces or shell syntax,
    so Python, gcloud, Node, Go and Java all run it the same way.
    """
    from .ops import config as cfg

    if audience is None:
        if not (project_number and pool and provider):
            raise click.UsageError("give --audience, or all of --project-number, --pool and --provider")
        audience = cfg.audience_for(project_number, pool, provider)
    try:
        document = cfg.build(
            audience=audience,
            service_account=service_account,
            executable=executable or cfg.this_executable(),
            policy=policy,
            timeout_millis=executable_timeout_millis,
            output_file=executable_output_file,
            token_type=f"urn:ietf:params:oauth:token-type:{subject_token_type}",
            token_lifetime_seconds=service_account_token_lifetime_seconds,
        )
    except cfg.ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    text = cfg.render(document)
    if output_file:
        with open(output_file, "w", encoding="utf-8") as f:
            f.write(text)
        click.echo(f"wrote {output_file}", err=True)
    else:
        click.echo(text, nl=False)


@cli.command("doctor")
@click.option("--exchange", is_flag=True, help="Also run a real google-auth refresh through STS and impersonation.")
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
def doctor_command(exchange: bool, as_json: bool) -> None:
    """Check a task's setup step by step, as the task would run it; name the broken step.

    Exit status 0 when nothing failed (warnings allowed), 1 otherwise. Never prints a token.
    """
    from .ops.doctor import FAIL, render, run_doctor

    checks = run_doctor(os.environ, exchange=exchange)
    click.echo(render(checks, as_json))
    sys.exit(1 if any(c.status == FAIL for c in checks) else 0)


@cli.command("plan")
@click.option("--project-number", required=True, metavar="NUMBER")
@click.option("--project-id", required=True, metavar="ID", help="Project that holds the pool and the service accounts.")
@click.option("--pool", required=True, metavar="POOL")
@click.option("--provider", required=True, metavar="PROVIDER")
@click.option(
    "--users",
    "users_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="user -> service account: TOML [users] table or CSV user,service_account.",
)
@click.option(
    "--issuer",
    metavar="URL",
    help="Issuer of the tasks' tokens [default: the broker's configured issuer, or Google's with --metadata-principal].",
)
@click.option(
    "--jwks-file",
    type=click.Path(exists=True, dir_okay=False),
    help="The host broker's JWKS (`iris-credexec host jwks`): per-task tokens.",
)
@click.option(
    "--metadata-principal", metavar="SUBJECT", help="The workers' service account unique id: metadata-sourced tokens."
)
@click.option("--subject-template", default="iris:user:{user}", show_default=True)
def plan_command(
    project_number: str,
    project_id: str,
    pool: str,
    provider: str,
    users_file: str,
    issuer: str | None,
    jwks_file: str | None,
    metadata_principal: str | None,
    subject_template: str,
) -> None:
    """Print the gcloud commands that create the pool, the provider and the IAM bindings. Runs nothing."""
    from .ops import plan as plan_mod

    try:
        with open(users_file, encoding="utf-8") as f:
            users = plan_mod.read_users(f.read(), users_file)
        if issuer is None:
            if jwks_file is not None:
                raise plan_mod.PlanError("--issuer is required with --jwks-file: the broker's `issuer` setting")
            issuer = plan_mod.GOOGLE_ISSUER
        text = plan_mod.plan(
            project_number=project_number,
            project_id=project_id,
            pool=pool,
            provider=provider,
            users=users,
            issuer=issuer,
            jwks_file=jwks_file,
            metadata_principal=metadata_principal,
            subject_template=subject_template,
        )
    except plan_mod.PlanError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(text, nl=False)


@cli.group("host")
def host_group() -> None:
    """The host side (on the VM, outside the containers): the per-task token broker and the metadata concealment proxy."""


def _broker_config(path: str) -> Any:
    from .host.config import BrokerConfigError, load

    try:
        return load(path)
    except BrokerConfigError as exc:
        raise click.ClickException(str(exc)) from None


_BROKER_CONFIG = click.option(
    "--config",
    "config_path",
    default="/etc/iris-credexec/broker.toml",
    show_default=True,
    metavar="PATH",
    help="The broker's configuration.",
)


@host_group.command("serve")
@_BROKER_CONFIG
def host_serve(config_path: str) -> None:
    """Serve per-task tokens on the broker's unix socket until stopped."""
    from .host.broker import serve

    config = _broker_config(config_path)
    click.echo(f"iris-credexec broker on {config.socket_path} (issuer {config.issuer})", err=True)
    serve(config)


@host_group.command("jwks")
@_BROKER_CONFIG
def host_jwks(config_path: str) -> None:
    """Print the public keys as a JWKS, for the workload identity provider (--jwk-json-path)."""
    from .host.keys import KeyStore

    config = _broker_config(config_path)
    store = KeyStore(config.keys_dir, max_token_lifetime=config.token_lifetime_seconds)
    store.ensure()
    click.echo(json.dumps(store.jwks(), indent=2))


@host_group.command("rotate-key")
@_BROKER_CONFIG
def host_rotate_key(config_path: str) -> None:
    """Add a signing key: published at once, signing after publish_before_signing_seconds."""
    from .host.keys import KeyStore

    config = _broker_config(config_path)
    key = KeyStore(config.keys_dir, max_token_lifetime=config.token_lifetime_seconds).rotate(
        config.publish_before_signing_seconds
    )
    click.echo(
        f"new key {key.kid}: upload the new `host jwks` to the provider now; it signs from {int(key.signs_from)}"
    )


@host_group.command("register")
@_BROKER_CONFIG
@click.option("--container", default="", metavar="ID", help="Full container id (cgroup identification).")
@click.option("--uid", type=int, default=-1, metavar="UID", help="The task's uid (uid identification).")
@click.option("--task", required=True, metavar="TASK_ID", help="Iris task id, /<user>/<job>/<task>[:<attempt>].")
@click.option("--user", metavar="USER", help="[default: from the task id]")
@click.option(
    "--audience", "audiences", multiple=True, metavar="AUDIENCE", help="Narrow the audiences this task may ask for."
)
def host_register(
    config_path: str, container: str, uid: int, task: str, user: str | None, audiences: tuple[str, ...]
) -> None:
    """Record which task a container (or uid) runs. Only root can write the registry."""
    from .host.registry import Registration, Registry, parse_task_id

    config = _broker_config(config_path)
    if bool(container) == (uid >= 0):
        raise click.UsageError("give --container or --uid")
    try:
        task_user, job, attempt = parse_task_id(task)
        Registry(config.registry_dir).register(
            Registration(
                task=task,
                user=user or task_user,
                job=job,
                attempt=attempt,
                container=container,
                uid=uid,
                audiences=audiences,
            )
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(f"registered {task}")


@host_group.command("unregister")
@_BROKER_CONFIG
@click.option("--container", default="", metavar="ID")
@click.option("--uid", type=int, default=-1, metavar="UID")
def host_unregister(config_path: str, container: str, uid: int) -> None:
    """Forget a task that ended: its container or uid gets no more tokens."""
    from .host.registry import Registry

    config = _broker_config(config_path)
    if bool(container) == (uid >= 0):
        raise click.UsageError("give --container or --uid")
    try:
        found = Registry(config.registry_dir).unregister(container=container, uid=uid)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo("unregistered" if found else "was not registered")


@host_group.command("conceal")
@click.option(
    "--listen", default="127.0.0.1:8988", show_default=True, metavar="HOST:PORT", help="Where the proxy listens."
)
@click.option(
    "--upstream", default="169.254.169.254:80", show_default=True, metavar="HOST:PORT", help="The real metadata server."
)
@click.option("--max-connections", default=256, show_default=True)
@click.option("--print-rules", is_flag=True, help="Print the redirection rules instead of serving.")
@click.option(
    "--format", "rule_format", type=click.Choice(["iptables", "nftables"]), default="iptables", show_default=True
)
@click.option("--bridge", default="docker0", show_default=True, help="Bridge of bridge-networked task containers.")
@click.option(
    "--bridge-proxy",
    default="172.17.0.1:8988",
    show_default=True,
    metavar="IP:PORT",
    help="The proxy as bridged tasks reach it.",
)
@click.option(
    "--host-proxy",
    default="127.0.0.1:8988",
    show_default=True,
    metavar="IP:PORT",
    help="The proxy as host-networked tasks reach it.",
)
@click.option(
    "--task-cgroup",
    metavar="PATH",
    help="cgroup v2 parent of host-networked tasks (docker --cgroup-parent); omit to skip them.",
)
def host_conceal(
    listen: str,
    upstream: str,
    max_connections: int,
    print_rules: bool,
    rule_format: str,
    bridge: str,
    bridge_proxy: str,
    host_proxy: str,
    task_cgroup: str | None,
) -> None:
    """Metadata proxy for tasks: forwards everything but the VM's credential paths (403)."""
    if print_rules:
        from .host import rules

        render = rules.iptables if rule_format == "iptables" else rules.nftables
        click.echo(render(bridge, bridge_proxy, host_proxy if task_cgroup else None, task_cgroup), nl=False)
        return
    import threading

    from .host.conceal import ConcealConfig, serve

    listen_host, _, listen_port = listen.rpartition(":")
    upstream_host, _, upstream_port = upstream.rpartition(":")
    config = ConcealConfig(
        listen_host=listen_host.strip("[]"),
        listen_port=int(listen_port),
        upstream_host=upstream_host.strip("[]"),
        upstream_port=int(upstream_port),
        max_connections=max_connections,
    )
    click.echo(f"iris-credexec conceal on {listen} -> {upstream}", err=True)
    serve(config, stop=threading.Event())


def main(argv: list[str]) -> int:
    """Run the CLI; usage errors in executable mode still answer the client in JSON."""
    try:
        result = cli.main(args=argv, prog_name="iris-credexec", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.Abort:
        click.echo("Aborted.", err=True)
        return 1
    except click.ClickException as exc:
        if isinstance(exc, click.UsageError) and _client_is_calling(argv):
            from .errors import Code, CredexecError
            from .response import Failure, write_stdout

            write_stdout(
                Failure.from_error(
                    CredexecError(
                        Code.REQUEST_INVALID,
                        f"Bad command line in the credential config: {exc.format_message()} "
                        "The command takes only --policy PATH and --service-account EMAIL.",
                    )
                )
            )
            return 0
        exc.show()
        return exc.exit_code
    return result if isinstance(result, int) else 0


def _client_is_calling(argv: list[str]) -> bool:
    """A Google client runs us with its variables set and no subcommand."""
    return env_vars.AUDIENCE in os.environ and not any(a in cli.commands for a in argv)
