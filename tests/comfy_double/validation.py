"""``POST /prompt`` validation, reproducing ComfyUI's rules and error bodies.

The structure follows ComfyUI's ``execution.validate_prompt`` / ``validate_inputs`` because the error
*shapes* depend on it: errors are collected per node while walking the graph back from each output
node; an exception raised while validating an upstream node (e.g. a link to a node that does not
exist) is reported on the node that was being validated by the *caller* — which is why the recorded
bad link shows up on the VAEDecode node with the VHS input's name (``prompt_error_bad_link.json``).
ComfyUI does not check ``step``; neither does this module. VHS's format widgets (``pix_fmt``, ``crf``,
``save_metadata``...) are not declared inputs, so ComfyUI does not validate them here either: bad
values only fail when the video is written (see ``node_impls.py``).

Note: like ComfyUI, validation converts INT/FLOAT/STRING/BOOLEAN values *in place* in the prompt,
so the queued prompt (and its history entry) holds the converted values.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .folders import Folders
from .node_defs import INPUT_FILE_LOADERS, NodeCatalog, input_info

logger = logging.getLogger(__name__)

#: Above this many choices ComfyUI sends "(list of length N)" instead of the list.
_MAX_LISTED_CHOICES = 20

#: Widget types whose values ComfyUI converts (and writes back into the prompt).
_CONVERTED_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN")

ErrorDict = dict[str, Any]


@dataclass
class ValidationResult:
    """``(valid, error, outputs_to_execute, node_errors)`` of ComfyUI's ``validate_prompt``."""

    valid: bool
    error: ErrorDict | None
    outputs: list[str] = field(default_factory=list)
    node_errors: dict[str, Any] = field(default_factory=dict)


def full_type_name(klass: type) -> str:
    """``module.QualName`` except for builtins, as ComfyUI formats exception types."""
    module = klass.__module__
    return klass.__qualname__ if module == "builtins" else f"{module}.{klass.__qualname__}"


def types_match(received: Any, expected: Any) -> bool:
    """ComfyUI's ``validate_node_input`` (non-strict): equal, ``*``, or overlapping unions."""
    if received == expected:
        return True
    if not isinstance(received, str) or not isinstance(expected, str):
        return False
    got = {t.strip() for t in received.split(",")}
    want = {t.strip() for t in expected.split(",")}
    return "*" in got or "*" in want or bool(got & want)


class PromptValidator:
    """Validates one prompt against the catalog's definitions (read fresh for every request)."""

    def __init__(self, catalog: NodeCatalog, folders: Folders) -> None:
        self._catalog = catalog
        self._folders = folders

    def validate(self, prompt: dict[str, Any], partial_targets: Sequence[str] | None = None) -> ValidationResult:
        outputs: list[str] = []
        for node_id, node in prompt.items():
            if not isinstance(node, dict) or "class_type" not in node:
                return ValidationResult(
                    False,
                    _error(
                        "invalid_prompt",
                        "Cannot execute because a node is missing the class_type property.",
                        f"Node ID '#{node_id}'",
                    ),
                )
            class_type = node["class_type"]
            if not self._catalog.has(class_type):
                meta = node.get("_meta")
                title = meta.get("title", class_type) if isinstance(meta, dict) else class_type
                return ValidationResult(
                    False,
                    _error(
                        "missing_node_type",
                        f"Node '{class_type}' not found. The custom node may not be installed.",
                        f"Node ID '#{node_id}'",
                        {"node_id": node_id, "class_type": class_type, "node_title": title},
                    ),
                )
            if self._catalog.is_output(class_type) and (partial_targets is None or node_id in partial_targets):
                outputs.append(node_id)

        if not outputs:
            return ValidationResult(False, _error("prompt_no_outputs", "Prompt has no outputs", ""))

        validated: dict[str, tuple[bool, list[ErrorDict]]] = {}
        good: list[str] = []
        failed: list[tuple[str, list[ErrorDict]]] = []
        node_errors: dict[str, Any] = {}
        for output in outputs:
            try:
                valid, reasons = self._validate_node(prompt, output, validated, set())
            except Exception as ex:  # noqa: BLE001 - ComfyUI reports any exception as a reason
                typ, _, tb = sys.exc_info()
                valid = False
                reasons = [
                    {
                        "type": "exception_during_validation",
                        "message": "Exception when validating node",
                        "details": str(ex),
                        "extra_info": {
                            "exception_type": full_type_name(typ or type(ex)),
                            "traceback": traceback.format_tb(tb),
                        },
                    }
                ]
                validated[output] = (False, reasons)
            if valid:
                good.append(output)
                continue
            failed.append((output, reasons))
            logger.error("Failed to validate prompt for output %s:", output)
            for reason in reasons:
                logger.error("* (prompt):  - %s: %s", reason["message"], reason["details"])
            for node_id, (ok, node_reasons) in validated.items():
                if ok or not node_reasons:
                    continue
                if node_id not in node_errors:
                    node_errors[node_id] = {
                        "errors": node_reasons,
                        "dependent_outputs": [],
                        "class_type": prompt[node_id]["class_type"],
                    }
                    for reason in node_reasons:
                        logger.error(
                            "* %s %s:  - %s: %s",
                            prompt[node_id]["class_type"],
                            node_id,
                            reason["message"],
                            reason["details"],
                        )
                node_errors[node_id]["dependent_outputs"].append(output)
            logger.error("Output will be ignored")

        if not good:
            details = "\n".join(f"{r['message']}: {r['details']}" for _, rs in failed for r in rs)
            error = _error("prompt_outputs_failed_validation", "Prompt outputs failed validation", details)
            return ValidationResult(False, error, [], node_errors)
        return ValidationResult(True, None, good, node_errors)

    # -- one node ---------------------------------------------------------------------------------

    def _validate_node(
        self,
        prompt: dict[str, Any],
        node_id: str,
        validated: dict[str, tuple[bool, list[ErrorDict]]],
        visiting: set[str],
    ) -> tuple[bool, list[ErrorDict]]:
        if node_id in validated:
            return validated[node_id]
        if node_id in visiting:
            cycle = [_reason("dependency_cycle", "Dependency cycle detected", f"Node {node_id}", {})]
            return False, cycle
        visiting.add(node_id)

        node = prompt[node_id]
        inputs = node["inputs"]
        class_type = node["class_type"]
        class_inputs = self._catalog.input_types(class_type)
        loader = INPUT_FILE_LOADERS.get(class_type)
        custom_inputs = (loader.input,) if loader else ()  # its VALIDATE_INPUTS replaces the COMBO check

        errors: list[ErrorDict] = []
        valid = True
        declared = [(name, "required") for name in class_inputs.get("required", {})]
        declared += [(name, "optional") for name in class_inputs.get("optional", {})]
        for name, category in declared:
            input_type, extra = input_info(class_inputs[category][name])
            info = [input_type, extra]
            if name not in inputs:
                if category == "required":
                    errors.append(_reason("required_input_missing", "Required input is missing", name, {"input_name": name}))
                continue

            value = inputs[name]
            if isinstance(value, list):
                ok = self._check_link(prompt, name, value, input_type, info, validated, visiting, errors)
                if not ok:
                    valid = False
                continue

            if isinstance(value, dict) and "__value__" in value:
                value = value["__value__"]
                inputs[name] = value
            try:
                value = _convert(input_type, value)
                if input_type in _CONVERTED_TYPES:
                    inputs[name] = value
            except Exception as ex:  # noqa: BLE001 - int()/float() raise several types
                errors.append(
                    _reason(
                        "invalid_input_type",
                        f"Failed to convert an input value to a {input_type} value",
                        f"{name}, {value}, {ex}",
                        {"input_name": name, "input_config": info, "received_value": value, "exception_message": str(ex)},
                    )
                )
                continue
            if name in custom_inputs:
                continue
            error = _check_range_and_choices(name, value, input_type, extra, info)
            if error is not None:
                errors.append(error)

        if loader is not None and loader.input in inputs:
            error = self._check_input_file(loader.input, loader.what, inputs[loader.input])
            if error is not None:
                errors.append(error)

        visiting.discard(node_id)
        result = (not errors and valid, errors)
        validated[node_id] = result
        return result

    def _check_link(
        self,
        prompt: dict[str, Any],
        name: str,
        link: list[Any],
        input_type: Any,
        info: list[Any],
        validated: dict[str, tuple[bool, list[ErrorDict]]],
        visiting: set[str],
        errors: list[ErrorDict],
    ) -> bool:
        """Check one linked input; True when it is valid. Raises like ComfyUI on a broken link."""
        if len(link) != 2:
            errors.append(
                _reason(
                    "bad_linked_input",
                    "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                    name,
                    {"input_name": name, "input_config": info, "received_value": link},
                )
            )
            return True  # ComfyUI records the error without marking the link invalid
        source_id = link[0]
        # A missing source node raises KeyError here, in *this* node's validation: the caller
        # (the node consuming this one) catches it and files it under this node's id.
        source_class = prompt[source_id]["class_type"]
        received_type = self._catalog.return_types(source_class)[link[1]]
        if not types_match(received_type, input_type):
            errors.append(
                _reason(
                    "return_type_mismatch",
                    "Return type mismatch between linked nodes",
                    f"{name}, {received_type} != {input_type}",
                    {"input_name": name, "input_config": info, "received_type": received_type, "linked_node": link},
                )
            )
            return True
        try:
            ok, _ = self._validate_node(prompt, source_id, validated, visiting)
        except Exception as ex:  # noqa: BLE001 - reported as ComfyUI does
            typ, _, tb = sys.exc_info()
            validated[source_id] = (
                False,
                [
                    _reason(
                        "exception_during_inner_validation",
                        "Exception when validating inner node",
                        str(ex),
                        {
                            "input_name": name,
                            "input_config": info,
                            "exception_message": str(ex),
                            "exception_type": full_type_name(typ or type(ex)),
                            "traceback": traceback.format_tb(tb),
                            "linked_node": link,
                        },
                    )
                ],
            )
            return False
        return ok

    def _check_input_file(self, name: str, what: str, value: Any) -> ErrorDict | None:
        """``LoadImage.VALIDATE_INPUTS`` / ``LoadAudio.validate_inputs``: any existing file of the input folder is accepted."""
        if isinstance(value, str) and os.path.exists(self._folders.annotated_path(value)):
            return None
        return _reason(
            "custom_validation_failed",
            "Custom validation failed for node",
            f"{name} - Invalid {what} file: {value}",
            {"input_name": name},
        )


def _convert(input_type: Any, value: Any) -> Any:
    if input_type == "INT":
        return int(value)
    if input_type == "FLOAT":
        return float(value)
    if input_type == "STRING":
        return str(value)
    if input_type == "BOOLEAN":
        return bool(value)
    return value


def _check_range_and_choices(name: str, value: Any, input_type: Any, extra: dict[str, Any], info: list[Any]) -> ErrorDict | None:
    if "min" in extra and value < extra["min"]:
        return _reason(
            "value_smaller_than_min",
            f"Value {value} smaller than min of {extra['min']}",
            name,
            {"input_name": name, "input_config": info, "received_value": value},
        )
    if "max" in extra and value > extra["max"]:
        return _reason(
            "value_bigger_than_max",
            f"Value {value} bigger than max of {extra['max']}",
            name,
            {"input_name": name, "input_config": info, "received_value": value},
        )
    if isinstance(input_type, list) or input_type == "COMBO":
        # ``["COMBO", {"options": [...]}]`` is how v3 nodes declare a list (TorchCompileModel's
        # ``backend`` in object_info_torch_compile.json); ComfyUI checks both forms alike.
        choices = extra.get("options", []) if input_type == "COMBO" else input_type
        if isinstance(value, str) and "\\" in value:
            value = value.replace("\\", "/")
        if all(isinstance(c, str) for c in choices):
            choices = [c.replace("\\", "/") for c in choices]
        if value not in choices:
            config: Any = info
            if len(choices) > _MAX_LISTED_CHOICES:
                listing = f"(list of length {len(choices)})"
                config = None
            else:
                listing = str(choices)
            return _reason(
                "value_not_in_list",
                "Value not in list",
                f"{name}: {value!r} not in {listing}",
                {"input_name": name, "input_config": config, "received_value": value},
            )
    return None


def _reason(kind: str, message: str, details: str, extra_info: dict[str, Any]) -> ErrorDict:
    return {"type": kind, "message": message, "details": details, "extra_info": extra_info}


def _error(kind: str, message: str, details: str, extra_info: dict[str, Any] | None = None) -> ErrorDict:
    return {"type": kind, "message": message, "details": details, "extra_info": extra_info or {}}
