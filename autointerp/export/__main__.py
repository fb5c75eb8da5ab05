"""`python -m autointerp.export`: print the JSON Schema of an exported label (labels.schema.json)."""

import json

from .schema import json_schema

print(json.dumps(json_schema(), indent=2))
