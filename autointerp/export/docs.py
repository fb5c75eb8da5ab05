"""`/api/docs`: the API's OpenAPI document as one HTML page, made by the server from /openapi.json.

FastAPI's own docs page loads Swagger UI from a CDN, so it is blank offline and asks a third party for
code. This page needs nothing else: no script, one inline style sheet, every link on the same origin
(its Content-Security-Policy, `DOCS_CSP`, allows no other). Each operation lists its parameters (where,
type, bounds, default, meaning) and responses; an operation with no path parameter gets a form that
sends a GET with its query parameters (the answer is the JSON, in the browser).
"""

from __future__ import annotations

from html import escape

DOCS_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; "
            "base-uri 'none'; frame-ancestors 'none'")

_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:70em;padding:1em 2em;color:#222}
h1{margin-bottom:.2em} h2{margin-top:2em;border-bottom:1px solid #ccc}
.op{border:1px solid #ddd;border-radius:6px;padding:.6em 1em;margin:1em 0}
.method{font-weight:bold;background:#2563eb;color:#fff;border-radius:4px;padding:0 .4em;margin-right:.4em}
code{background:#f3f3f3;padding:0 .25em;border-radius:3px} .muted{color:#666}
table{border-collapse:collapse;margin:.5em 0;width:100%} td,th{border-top:1px solid #eee;padding:.25em .5em;
text-align:left;vertical-align:top} th{font-weight:600} form{margin:.6em 0} form label{margin-right:1em}
pre{white-space:pre-wrap;margin:.3em 0}
"""


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def _resolve(schema: dict, spec: dict) -> dict:
    while isinstance(schema, dict) and "$ref" in schema:
        schema = spec.get("components", {}).get("schemas", {}).get(_ref_name(schema["$ref"]), {})
    return schema or {}


def _type(schema: dict, spec: dict) -> str:
    """A schema in a few words: `integer`, `'a' | 'b'`, `array of FeatureRow`, `string or null`."""
    if not schema:
        return "any"
    if "$ref" in schema:
        target = _resolve(schema, spec)
        if "enum" in target:
            return " | ".join(repr(v) for v in target["enum"])
        return _ref_name(schema["$ref"])
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            return " or ".join(_type(s, spec) for s in schema[key])
    if "enum" in schema:
        return " | ".join(repr(v) for v in schema["enum"])
    if schema.get("type") == "array":
        return f"array of {_type(schema.get('items', {}), spec)}"
    if schema.get("type") == "object" and "additionalProperties" in schema:
        extra = schema["additionalProperties"]
        return f"object of {_type(extra, spec) if isinstance(extra, dict) else 'any'}"
    return str(schema.get("type", "any"))


def _bounds(schema: dict, spec: dict) -> str:
    out = []
    for s in [schema, *schema.get("anyOf", [])]:
        s = _resolve(s, spec)
        for key, word in (("minimum", "≥"), ("maximum", "≤"), ("exclusiveMinimum", ">"), ("exclusiveMaximum", "<"),
                          ("minLength", "length ≥"), ("maxLength", "length ≤"), ("pattern", "matches")):
            if key in s:
                out.append(f"{word} {s[key]}")
    return ", ".join(out)


def _choices(schema: dict, spec: dict) -> list | None:
    for s in [schema, *schema.get("anyOf", [])]:
        s = _resolve(s, spec)
        if "enum" in s:
            return list(s["enum"])
        if s.get("type") == "boolean":
            return [False, True]
    return None


def _form(path: str, params: list[dict], spec: dict) -> str:
    """A GET form for the operation's query parameters (each prefilled with its default)."""
    fields = []
    for p in params:
        schema = p.get("schema", {})
        name = escape(p["name"])
        default = schema.get("default")
        choices = _choices(schema, spec)
        if choices is not None:
            opts = "".join(f'<option{" selected" if c == default else ""}>{escape(_value(c))}</option>'
                           for c in choices)
            field = f'<select name="{name}">{opts}</select>'
        else:
            value = "" if default is None else escape(_value(default))
            field = f'<input name="{name}" value="{value}"{" required" if p.get("required") else ""}>'
        fields.append(f"<label>{name} {field}</label>")
    return f'<form action="{escape(path)}" method="get">{"".join(fields)}<button type="submit">GET</button></form>'


def _value(v) -> str:
    return ("true" if v else "false") if isinstance(v, bool) else str(v)


def docs_page(spec: dict, openapi_url: str = "/openapi.json") -> str:
    """The HTML of the docs page for the OpenAPI document `spec`."""
    info = spec.get("info", {})
    out = [f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(info.get("title", "API"))} '
           f'API</title><link rel="icon" href="data:,"><style>{_STYLE}</style></head><body>',
           f'<h1>{escape(info.get("title", "API"))} API <span class="muted">v{escape(str(info.get("version", "")))}'
           f'</span></h1>',
           f'<p>{escape(info.get("summary", "") or info.get("description", ""))} The OpenAPI document: '
           f'<a href="{escape(openapi_url)}">{escape(openapi_url)}</a>.</p>', "<h2>Operations</h2>"]
    for path, ops in spec.get("paths", {}).items():
        for method, op in ops.items():
            params = op.get("parameters", [])
            out.append(f'<div class="op" id="{escape(op.get("operationId", path))}"><h3><span class="method">'
                       f'{escape(method.upper())}</span><code>{escape(path)}</code> '
                       f'{escape(op.get("summary", ""))}</h3>')
            if op.get("description"):
                out.append(f"<pre>{escape(op['description'])}</pre>")
            if params:
                out.append("<table><tr><th>parameter</th><th>in</th><th>type</th><th>bounds</th><th>default</th>"
                           "<th>meaning</th></tr>")
                for p in params:
                    schema = p.get("schema", {})
                    default = schema.get("default")
                    out.append(f"<tr><td><code>{escape(p['name'])}</code>{' (required)' if p.get('required') else ''}"
                               f"</td><td>{escape(p.get('in', ''))}</td><td>{escape(_type(schema, spec))}</td>"
                               f"<td>{escape(_bounds(schema, spec))}</td>"
                               f"<td>{'' if default is None else escape(_value(default))}</td>"
                               f"<td>{escape(p.get('description', '') or schema.get('description', ''))}</td></tr>")
                out.append("</table>")
            responses = []
            for code, r in op.get("responses", {}).items():
                schema = r.get("content", {}).get("application/json", {}).get("schema")
                responses.append(f"<li><b>{escape(code)}</b> {escape(r.get('description', ''))}"
                                 + (f": <code>{escape(_type(schema, spec))}</code>" if schema else "") + "</li>")
            out.append(f"<p>Responses:</p><ul>{''.join(responses)}</ul>")
            if method == "get" and not any(p.get("in") == "path" for p in params):
                out.append(_form(path, [p for p in params if p.get("in") == "query"], spec))
            out.append("</div>")
    schemas = spec.get("components", {}).get("schemas", {})
    if schemas:
        out.append("<h2>Schemas</h2>")
        for name, s in schemas.items():
            props = s.get("properties")
            out.append(f'<div class="op" id="schema-{escape(name)}"><h3><code>{escape(name)}</code></h3>')
            if props:
                required = set(s.get("required", []))
                out.append("<table><tr><th>field</th><th>type</th></tr>" + "".join(
                    f"<tr><td><code>{escape(k)}</code>{'' if k in required else ' (optional)'}</td>"
                    f"<td>{escape(_type(v, spec))}</td></tr>" for k, v in props.items()) + "</table>")
            else:
                out.append(f"<p>{escape(_type(s, spec))}</p>")
            out.append("</div>")
    out.append("</body></html>")
    return "\n".join(out)
