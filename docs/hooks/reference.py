"""MkDocs hook: the pages made from the code, so they cannot drift from it.

Each marker below, in a page's Markdown, is replaced at build time (nothing is fetched; nothing is written
into docs/):

    <!-- autointerp:cli -->              every command's --help (the Typer app), as Markdown
    <!-- autointerp:exit-codes -->       the exit-code table, from autointerp.errors.EXIT_CODES
    <!-- autointerp:schema -->           the store's tables and columns, from the migrations in store/schema.py
    <!-- autointerp:readme-commands -->  the two commands that open README.md (its first ```bash block)
    <!-- autointerp:notebook PATH -->    a notebook's cells (PATH from the repository root); the notebook
                                         itself is copied beside the page, and links to it are pointed there

Pages keep a sentence saying what the marker stands for, so they read on GitHub too.
"""

from __future__ import annotations

import html
import inspect
import json
import posixpath
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MARKER = re.compile(r"<!-- autointerp:([a-z-]+)(?: ([^ ]+))? -->")


# -- the command line ----------------------------------------------------------------------------------

def _text(s: str) -> str:
    """Plain help text as Markdown: paragraphs rejoined, HTML and Markdown's own characters escaped outside
    `code` spans."""
    s = "\n\n".join(" ".join(p.split()) for p in re.split(r"\n\s*\n", s.replace("\b", "")) if p.strip())
    parts = s.split("`")
    for i in range(0, len(parts), 2):  # even parts are outside backticks
        p = html.escape(parts[i], quote=False)
        parts[i] = re.sub(r"([\\*_\[\]#])", r"\\\1", p)
    if len(parts) % 2 == 0:  # an unpaired backtick: leave it literal
        parts[-2] += "\\`" + parts.pop()
    return "`".join(parts)


def _cell(s: str) -> str:
    return _text(s).replace("\n\n", "<br>").replace("|", "\\|")


def _commands(cmd, ctx):
    """(path, command, context) for a command and every command under it, in the order --help lists them."""
    yield cmd, ctx
    if hasattr(cmd, "list_commands"):
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                yield from _commands(sub, sub.context_class(sub, info_name=name, parent=ctx))


def cli_reference() -> str:
    import typer

    from autointerp.cli import app

    root = typer.main.get_command(app)
    out = []
    for cmd, ctx in _commands(root, root.context_class(root, info_name="autointerp")):
        path = ctx.command_path
        level = "#" * max(2, 1 + path.count(" "))  # autointerp, autointerp label: ##; autointerp ingest delphi: ###
        out.append(f"{level} `{path}`\n")
        out.append(f"```text\n{cmd.get_usage(ctx)}\n```\n")
        if cmd.help:
            out.append(_text(cmd.help) + "\n")
        panels: dict[str, list[str]] = {}
        for p in cmd.get_params(ctx):
            rec = p.get_help_record(ctx)
            if rec is None or getattr(p, "hidden", False) or p.name == "help":
                continue
            opts, help_ = rec
            kind = "Arguments" if p.param_type_name == "argument" else "Options"
            panel = getattr(p, "rich_help_panel", None) or kind
            panels.setdefault(panel, []).append(f"| `{opts}` | {_cell(help_)} |")
        for panel, rows in panels.items():
            head = "argument" if panel == "Arguments" else "option"
            out.append(f"**{panel}**\n\n| {head} | |\n|---|---|\n" + "\n".join(rows) + "\n")
        if hasattr(cmd, "list_commands"):
            rows = [f"| `{ctx.command_path} {n}` | {_cell(cmd.get_command(ctx, n).get_short_help_str(1000))} |"
                    for n in cmd.list_commands(ctx) if not cmd.get_command(ctx, n).hidden]
            out.append("**Commands**\n\n| command | |\n|---|---|\n" + "\n".join(rows) + "\n")
        if cmd.epilog and path == "autointerp":
            out.append("The exit codes `autointerp --help` lists after the commands are in "
                       "[Exit codes](exit-codes.md).\n")
    return "\n".join(out)


# -- exit codes ----------------------------------------------------------------------------------------

def exit_codes() -> str:
    from autointerp.errors import EXIT_CODES

    return "| code | meaning |\n|---|---|\n" + "\n".join(f"| {c} | {w} |" for c, w in EXIT_CODES.items()) + "\n"


# -- the store's schema --------------------------------------------------------------------------------

def _migration_notes(fn) -> tuple[str, dict[str, str], dict[tuple[str, str], str]]:
    """From a migration's source: its other comments (what the migration is for), the comment before each
    CREATE TABLE (in the order the tables are made), and each column's trailing `-- comment`."""
    tables: dict[str, str] = {}
    columns: dict[tuple[str, str], str] = {}
    notes, pending, table = [], [], None
    for line in inspect.getsource(fn).splitlines()[1:]:
        s = line.strip()
        if s.startswith("#"):
            pending.append(s.lstrip("# ").rstrip())
            continue
        if s == 'con.execute("""':  # the statement starts on the next line
            continue
        m = re.search(r"CREATE TABLE (\w+)", s)
        if m:
            table = m.group(1)
            tables[table] = " ".join(pending)
        elif pending:
            notes.append(" ".join(pending))
        pending = []
        m = re.match(r"(\w+) [A-Z].*?--\s*(.+)$", s)
        if table and m:
            columns[(table, m.group(1))] = m.group(2).strip()
        if s.endswith('""")'):
            table = None
    return " ".join(notes), tables, columns


def store_schema() -> str:
    import duckdb

    from autointerp.store.schema import MIGRATIONS

    con = duckdb.connect(":memory:")
    con.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, "
                "applied_at TIMESTAMP NOT NULL)")  # as the store makes it before the first migration (db.py)
    since: dict[tuple[str, str], int] = {}  # (table, column) -> the migration that added it
    table_note = {"schema_migrations": "One row per migration applied (version, name, time): the store's "
                                       "schema version is the highest."}
    col_note: dict[tuple[str, str], str] = {}
    created = ["schema_migrations"]  # tables, in the order they are made
    migrations = []

    def columns():
        return con.execute("SELECT table_name, column_name, data_type, is_nullable "
                           "FROM information_schema.columns ORDER BY table_name, ordinal_position").fetchall()

    seen = {(t, c) for t, c, *_ in columns()}
    for number, name, fn in MIGRATIONS:
        fn(con)
        note, tables, cols = _migration_notes(fn)
        for t, c, *_ in columns():
            if (t, c) not in seen:
                seen.add((t, c))
                since[(t, c)] = number
        created.extend(t for t in tables if t not in created)
        table_note.update({t: n for t, n in tables.items() if n})
        col_note.update(cols)
        migrations.append((number, name, " ".join(x for x in (*tables.values(), note) if x)))

    by_table: dict[str, list] = {}
    for t, c, typ, nullable in columns():
        by_table.setdefault(t, []).append((c, typ, nullable))
    order = created + sorted(set(by_table) - set(created))
    out = [f"The schema after migration {MIGRATIONS[-1][0]}: {len(by_table)} tables.\n", "## Tables\n"]
    for t in order:
        first = min((since.get((t, c), 0) for c, *_ in by_table[t]), default=0)
        made = f"Made by migration {first}." if first else "Made when the store is first opened."
        out.append(f"### `{t}`\n\n{made} {_text(table_note.get(t, ''))}\n")
        out.append("| column | type | null | added by | note |\n|---|---|---|---|---|")
        for c, typ, nullable in by_table[t]:
            added = since.get((t, c), 0)
            out.append(f"| `{c}` | `{typ}` | {'yes' if nullable == 'YES' else 'no'} | "
                       f"{added if added != first else ''} | {_cell(col_note.get((t, c), ''))} |")
        out.append("")
    out.append("## Migrations\n")
    out.append("| # | name | what it does (from its comments) |\n|---|---|---|")
    for number, name, note in migrations:
        out.append(f"| {number} | {_cell(name)} | {_cell(note)} |")
    return "\n".join(out) + "\n"


# -- README's two commands, a notebook -----------------------------------------------------------------

def readme_commands() -> str:
    text = (ROOT / "README.md").read_text()
    m = re.search(r"^```bash\n.*?^```$", text, re.DOTALL | re.MULTILINE)
    return m.group(0) + "\n"


def notebook(path: str) -> str:
    nb = json.loads((ROOT / path).read_text())
    out = []
    for cell in nb["cells"]:
        src = "".join(cell["source"]).rstrip()
        if not src:
            continue
        if cell["cell_type"] == "markdown":
            out.append(re.sub(r"^#", "##", src, flags=re.MULTILINE))  # the page has its own title
        elif cell["cell_type"] == "code":
            out.append(f"```python\n{src}\n```")
    return "\n\n".join(out) + "\n"


# -- MkDocs events -------------------------------------------------------------------------------------

MAKERS = {"cli": cli_reference, "exit-codes": exit_codes, "schema": store_schema,
          "readme-commands": readme_commands}
_notebooks: dict[str, str] = {}  # repository path -> the page folder (in docs) it is copied into


def on_files(files, config):
    from mkdocs.structure.files import File

    docs = Path(config["docs_dir"])
    for page in docs.rglob("*.md"):
        for kind, arg in MARKER.findall(page.read_text()):
            if kind == "notebook":
                uri = (page.parent.relative_to(docs) / Path(arg).name).as_posix()
                _notebooks[arg] = uri
                files.append(File.generated(config, uri, abs_src_path=str(ROOT / arg)))
    return files


def on_page_markdown(markdown, page, config, files):
    def replace(m):
        kind, arg = m.group(1), m.group(2)
        if kind == "notebook":
            return notebook(arg)
        if kind not in MAKERS:
            raise ValueError(f"{page.file.src_uri}: unknown marker autointerp:{kind}")
        return MAKERS[kind]()

    markdown = MARKER.sub(replace, markdown)
    here = posixpath.dirname(page.file.src_uri)
    for repo_path, uri in _notebooks.items():  # a link to the notebook in the repository -> its copy in the site
        in_repo = posixpath.relpath(repo_path, posixpath.join("docs", here))
        markdown = markdown.replace(f"]({in_repo})", f"]({posixpath.relpath(uri, here or '.')})")
    return markdown
