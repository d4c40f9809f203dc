"""Validate OCSF objects (one JSON object per line) with the pydantic-ocsf package.

Usage: python ocsf_check.py VERSION FILE

Each line is validated against the pydantic-ocsf model of its class (required attributes,
enum values, type_uid = class_uid * 100 + activity_id, nested object types), offline. On top of
the models, which accept unknown attributes, every attribute must be one the OCSF dictionary
of that version defines (profile attributes such as `action_id` or `container` included), and
the caption siblings (class_name, category_name, activity_name, type_name) must match the
schema. Prints `ok N` and exits 0, or one line per problem (`FILE:LINE: ...`) and exits 1.
"""

import importlib
import json
import os
import sys
import typing

import pydantic
import ocsf

CLASSES = {
    4001: "NetworkActivity",
    1001: "FileActivity",
    1007: "ProcessActivity",
    6002: "ApplicationLifecycle",
    6008: "ApplicationError",
    2003: "ComplianceFinding",
}


def class_attributes(schema, cls):
    """A class's attributes with those it inherits (`extends`), the class's own winning."""
    attrs = {}
    chain = []
    while cls is not None:
        chain.append(cls)
        parent = cls.get("extends")
        cls = schema["events"].get(parent) if parent else None
    for c in reversed(chain):
        own = c.get("attributes", {})
        if isinstance(own, list):
            own = {k: v for a in own for k, v in a.items()}
        attrs.update(own)
    return attrs


def model_of(annotation):
    """The pydantic model inside an annotation (X | None, list[X]), or None."""
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = model_of(arg)
        if found is not None:
            return found
    return None


def fields_by_alias(model):
    return {(f.alias or name): f for name, f in model.model_fields.items()}


def check_keys(value, model, path, dictionary, objects, problems):
    """Every key is a field of `model` or an attribute of the OCSF dictionary; recurse."""
    if isinstance(value, list):
        for i, item in enumerate(value):
            check_keys(item, model, f"{path}[{i}]", dictionary, objects, problems)
        return
    # `unmapped` (and any attribute of type `object`) is free-form by definition.
    if not isinstance(value, dict) or model is None or model.__name__ == "Object":
        return
    fields = fields_by_alias(model)
    for key, sub in value.items():
        where = f"{path}.{key}" if path else key
        if key in fields:
            check_keys(sub, model_of(fields[key].annotation), where, dictionary, objects, problems)
        elif key in dictionary:
            # A profile attribute: validate an object value with its object's model.
            obj_type = dictionary[key].get("object_type") or dictionary[key].get("type")
            if obj_type:
                obj_model = getattr(objects, "".join(p.capitalize() for p in obj_type.split("_")), None)
                if obj_model is not None:
                    try:
                        obj_model.model_validate(sub)
                    except pydantic.ValidationError as e:
                        problems.append(f"{where}: {e.errors()[0]['msg']} at {e.errors()[0]['loc']}")
                    check_keys(sub, obj_model, where, dictionary, objects, problems)
        else:
            problems.append(f"{where}: not an OCSF attribute")


def main():
    version, path = sys.argv[1], sys.argv[2]
    mod = "v" + version.replace(".", "_")
    events = importlib.import_module(f"ocsf.{mod}.events")
    objects = importlib.import_module(f"ocsf.{mod}.objects")
    with open(os.path.join(os.path.dirname(ocsf.__file__), "schemas", f"{mod}.json")) as f:
        schema = json.load(f)
    dictionary = schema["dictionary"]["attributes"]
    problems, n = [], 0
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            n += 1
            loc = f"{path}:{lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                problems.append(f"{loc}: not JSON: {e}")
                continue
            name = CLASSES.get(obj.get("class_uid"))
            if name is None:
                problems.append(f"{loc}: class_uid {obj.get('class_uid')} not expected")
                continue
            model = getattr(events, name)
            try:
                model.model_validate(obj)
            except pydantic.ValidationError as e:
                for err in e.errors():
                    problems.append(f"{loc}: {name}: {'.'.join(map(str, err['loc']))}: {err['msg']}")
                continue
            required = [a for a, f in fields_by_alias(model).items() if f.is_required()]
            for attr in required:
                if attr not in obj:
                    problems.append(f"{loc}: {name}: required {attr} missing")
            found = []
            check_keys(obj, model, "", dictionary, objects, found)
            problems.extend(f"{loc}: {name}: {p}" for p in found)
            # Caption siblings against the schema.
            cls = next(c for c in schema["events"].values() if c.get("caption") == obj.get("class_name"))
            attrs = class_attributes(schema, cls)
            activities = attrs.get("activity_id", {}).get("enum", {})
            want = activities.get(str(obj.get("activity_id")), {}).get("caption")
            if want != obj.get("activity_name"):
                problems.append(f"{loc}: activity_name {obj.get('activity_name')!r}, schema says {want!r}")
            if obj.get("type_name") != f"{obj.get('class_name')}: {obj.get('activity_name')}":
                problems.append(f"{loc}: type_name {obj.get('type_name')!r}")
            if obj["metadata"].get("version") != version:
                problems.append(f"{loc}: metadata.version {obj['metadata'].get('version')!r}")
    for p in problems:
        print(p)
    if problems:
        sys.exit(1)
    print(f"ok {n}")


if __name__ == "__main__":
    main()
