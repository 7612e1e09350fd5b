"""Tests for the ${{ }} expression evaluator (domain.expressions)."""

import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.expressions import (
    ExpressionError,
    evaluate,
    evaluate_condition,
    find_templates,
    has_templates,
    is_truthy,
    parse,
    references,
    render,
    render_value,
    to_display_string,
    uses_status_function,
)

CONTEXT = {
    "inputs": {"name": "World", "count": 3, "flag": True, "empty": "", "list": ["a", "b", "c"]},
    "steps": {
        "build": {"outputs": {"sha": "abc123", "json": '{"k": [1, 2]}'}, "status": "success"},
        "my-step": {"outputs": {"x_y": "hyphen"}, "status": "failure"},
    },
    "trigger": {"event": {"labels": [{"name": "bug"}, {"name": "Urgent"}]}},
    "env": {"MODE": "prod"},
    "run": {"id": 42, "ratio": 0.5},
}

FAST = settings(max_examples=150, deadline=None, database=None)


def ev(source, **kwargs):
    return evaluate(source, CONTEXT, **kwargs)


# --- literals ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("null", None),
        ("true", True),
        ("false", False),
        ("42", 42),
        ("-1", -1),
        ("3.25", 3.25),
        ("-0.5", -0.5),
        ("0xff", 255),
        ("1e3", 1000.0),
        ("2.5E-1", 0.25),
        ("'hello'", "hello"),
        ("'it''s'", "it's"),
        ("''", ""),
        ("  'padded'  ", "padded"),
    ],
)
def test_literals_evaluate_to_their_values(source, expected):
    assert ev(source) == expected
    assert type(ev(source)) is type(expected)


# --- property access ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("inputs.name", "World"),
        ("inputs['name']", "World"),
        ("inputs.list[1]", "b"),
        ("inputs.list['2']", "c"),
        ("steps.build.outputs.sha", "abc123"),
        ("steps['build'].outputs['sha']", "abc123"),
        ("steps.my-step.outputs.x_y", "hyphen"),
        ("trigger.event.labels[0].name", "bug"),
        ("inputs.NAME", "World"),
        ("INPUTS.name", "World"),
        ("(inputs).name", "World"),
        ("fromJSON(steps.build.outputs.json).k[1]", 2),
    ],
)
def test_property_access_reads_context_values(source, expected):
    assert ev(source) == expected


@pytest.mark.parametrize(
    "source",
    [
        "inputs.missing",
        "inputs.missing.deeper",
        "inputs.list[3]",
        "inputs.list[-1]",
        "inputs.list[0.5]",
        "inputs.list['x']",
        "inputs.name.length",
        "inputs.count[0]",
        "inputs[inputs.list]",
        "steps.nope.outputs.sha",
    ],
)
def test_missing_properties_and_invalid_indexes_evaluate_to_none(source):
    assert ev(source) is None


def test_object_filter_collects_property_of_each_member():
    assert ev("steps.*.status") == ["success", "failure"]
    assert ev("trigger.event.labels.*.name") == ["bug", "Urgent"]
    assert ev("inputs.list[*]") == ["a", "b", "c"]
    assert type(ev("steps.*.status")) is list


def test_object_filter_drops_members_without_the_property():
    assert ev("steps.*.outputs.sha") == ["abc123"]


def test_object_filter_result_works_with_contains():
    assert ev("contains(steps.*.status, 'FAILURE')") is True
    assert ev("contains(trigger.event.labels.*.name, 'urgent')") is True


def test_unknown_context_raises_with_name_and_position():
    with pytest.raises(ExpressionError, match="unknown context 'foo'") as info:
        ev("inputs.name == foo.bar")
    assert info.value.position == 15
    assert info.value.source == "inputs.name == foo.bar"


def test_context_value_none_behaves_like_empty_object():
    assert evaluate("secrets.token", {"secrets": None}) is None


# --- operators and precedence ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("!true", False),
        ("!false", True),
        ("!!'x'", True),
        ("!0", True),
        ("!inputs.missing", True),
        ("1 < 2", True),
        ("2 < 1", False),
        ("2 <= 2", True),
        ("3 <= 2", False),
        ("3 > 2", True),
        ("2 > 3", False),
        ("2 >= 2", True),
        ("1 >= 2", False),
        ("1 == 1", True),
        ("1 == 2", False),
        ("1 != 2", True),
        ("1 != 1", False),
        ("true && true", True),
        ("true && false", False),
        ("false || true", True),
        ("false || false", False),
    ],
)
def test_each_operator(source, expected):
    assert ev(source) is expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        # '!' binds tighter than comparisons: (!1) == false
        ("!1 == false", True),
        # comparisons bind tighter than equality: (1 < 2) == true
        ("1 < 2 == true", True),
        ("true == 1 < 2", True),
        # '==' binds tighter than '&&'
        ("1 == 1 && 2 == 2", True),
        # '&&' binds tighter than '||'
        ("true || true && false", True),
        ("false && true || true", True),
        ("(true || true) && false", False),
        # parentheses override
        ("!(1 == 2)", True),
        # property access binds tighter than '!'
        ("!inputs.flag", False),
        # comparisons are left-associative: (3 > 2) > 1  ->  true > 1  ->  1 > 1
        ("3 > 2 > 1", False),
    ],
)
def test_operator_precedence_follows_github(source, expected):
    assert ev(source) is expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("inputs.name && inputs.count", 3),
        ("inputs.empty && inputs.count", ""),
        ("inputs.missing || 'default'", "default"),
        ("inputs.name || 'default'", "World"),
        ("0 || '' || null", None),
        ("1 && 'x' && inputs.list", ["a", "b", "c"]),
        ("inputs.flag && 'yes' || 'no'", "yes"),
        ("!inputs.flag && 'yes' || 'no'", "no"),
    ],
)
def test_logical_operators_return_the_deciding_operand(source, expected):
    assert ev(source) == expected


def test_logical_operators_short_circuit_and_skip_errors_on_the_right():
    assert ev("false && unknown.x") is False
    assert ev("true || fromJSON('not json')") is True
    with pytest.raises(ExpressionError, match="unknown context"):
        ev("true && unknown.x")


# --- comparison semantics ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("'abc' == 'ABC'", True),
        ("'Straße' == 'STRASSE'", True),
        ("'abc' != 'ABD'", True),
        ("env.MODE == 'PROD'", True),
        ("'a' < 'B'", True),
        ("'B' < 'a'", False),
        ("'abc' <= 'ABC'", True),
        ("'10' < '9'", True),
    ],
)
def test_strings_compare_case_insensitively(source, expected):
    assert ev(source) is expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("'1' == 1", True),
        ("' 1.5 ' == 1.5", True),
        ("'0x10' == 16", True),
        ("'' == 0", True),
        ("null == 0", True),
        ("null == false", True),
        ("null == ''", True),
        ("true == 1", True),
        ("false == 0", True),
        ("true == '1'", True),
        ("true == 2", False),
        ("'abc' == 0", False),
        ("'abc' != 0", True),
        ("'1e3' == 1000", True),
        ("1 == 1.0", True),
        ("null == null", True),
        ("true == true", True),
        ("inputs.list == inputs.list", True),
        ("inputs.list == 'a,b,c'", False),
        ("fromJSON('[]') == fromJSON('[]')", False),
        ("fromJSON('{}') == 0", False),
        ("fromJSON('{}') != 0", True),
        ("'2' > 1", True),
        ("'abc' < 1", False),
        ("'abc' >= 1", False),
        ("null < 1", True),
        ("true > false", True),
        ("inputs.list < 1", False),
        ("inputs.list > 1", False),
    ],
)
def test_mixed_types_coerce_to_numbers(source, expected):
    assert ev(source) is expected


def test_nan_is_unequal_to_everything_including_itself():
    nan = {"v": {"nan": math.nan}}
    assert evaluate("v.nan == v.nan", nan) is False
    assert evaluate("v.nan != v.nan", nan) is True
    assert evaluate("'abc' == 'def' || v.nan < 1 || v.nan > 1", nan) is False
    assert evaluate("v.nan", nan) != evaluate("v.nan", nan)


# --- functions ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("contains('Hello World', 'WORLD')", True),
        ("contains('Hello', 'x')", False),
        ("contains(inputs.list, 'B')", True),
        ("contains(inputs.list, 'd')", False),
        ("contains(fromJSON('[1, 2]'), '2')", True),
        ("contains('abc', '')", True),
        ("contains(123, 2)", True),
        ("contains(true, 'ru')", True),
        ("startsWith('Hello', 'he')", True),
        ("startsWith('Hello', 'lo')", False),
        ("startsWith(12, 1)", True),
        ("startsWith(inputs.list, 'a')", False),
        ("endsWith('Hello', 'LO')", True),
        ("endsWith('Hello', 'he')", False),
        ("endsWith('x', inputs.list)", False),
        ("CONTAINS('ab', 'A')", True),
        ("StartsWith('ab', 'A')", True),
    ],
)
def test_search_functions_are_case_insensitive(source, expected):
    assert ev(source) is expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("format('Hello {0}!', inputs.name)", "Hello World!"),
        ("format('{0}-{1}-{0}', 'a', 'b')", "a-b-a"),
        ("format('{{0}} is {0}', 1)", "{0} is 1"),
        ("format('{0}}}', 'x')", "x}"),
        ("format('no placeholders')", "no placeholders"),
        ("format('{0} {1} {2} {3}', null, true, 1.0, inputs.list)", ' true 1 ["a","b","c"]'),
    ],
)
def test_format_substitutes_placeholders(source, expected):
    assert ev(source) == expected


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("format('{1}', 'a')", "placeholder '{1}' has no argument"),
        ("format('{0}')", "placeholder '{0}' has no argument"),
        ("format('{99999999999999}', 'a')", "has no argument"),
        ("format('{x}', 'a')", "invalid format string"),
        ("format('{', 'a')", "invalid format string"),
        ("format('}', 'a')", "invalid format string"),
    ],
)
def test_format_rejects_bad_format_strings(source, message):
    with pytest.raises(ExpressionError, match=re.escape(message)) as info:
        ev(source)
    assert info.value.position == 0


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("join(inputs.list)", "a,b,c"),
        ("join(inputs.list, ' | ')", "a | b | c"),
        ("join(fromJSON('[1, true, null]'), '-')", "1-true-"),
        ("join('single')", "single"),
        ("join(fromJSON('[]'))", ""),
        ("join(steps.*.status, ';')", "success;failure"),
    ],
)
def test_join_concatenates_array_elements(source, expected):
    assert ev(source) == expected


def test_to_json_pretty_prints_with_two_space_indent():
    assert ev("toJSON(inputs.list)") == '[\n  "a",\n  "b",\n  "c"\n]'
    assert ev("toJSON(fromJSON('{\"a\": 1.0}'))") == '{\n  "a": 1\n}'
    assert ev("toJSON('text')") == '"text"'
    assert ev("toJSON(null)") == "null"
    assert ev("toJSON(true)") == "true"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("fromJSON('{\"a\": [1, 2.5, null, true]}')", {"a": [1, 2.5, None, True]}),
        ("fromJSON('\"s\"')", "s"),
        ("fromJSON('42')", 42),
        ("fromJSON(' false ')", False),
        ("fromJSON('null')", None),
        ("fromJSON(toJSON(inputs))", CONTEXT["inputs"]),
    ],
)
def test_from_json_parses_json_text(source, expected):
    assert ev(source) == expected


@pytest.mark.parametrize("source", ["fromJSON('{bad')", "fromJSON('')", "fromJSON('[' )"])
def test_from_json_rejects_invalid_json(source):
    with pytest.raises(ExpressionError, match="fromJSON: invalid JSON"):
        ev(source)


def test_from_json_rejects_pathologically_nested_json():
    with pytest.raises(ExpressionError, match="fromJSON"):
        evaluate("fromJSON(v.text)", {"v": {"text": "[" * 100_000}})


@pytest.mark.parametrize(
    ("job_status", "expected"),
    [
        ("success", {"success": True, "failure": False, "cancelled": False, "always": True}),
        ("failure", {"success": False, "failure": True, "cancelled": False, "always": True}),
        ("cancelled", {"success": False, "failure": False, "cancelled": True, "always": True}),
    ],
)
def test_status_functions_follow_job_status(job_status, expected):
    for name, value in expected.items():
        assert ev(f"{name}()", job_status=job_status) is value


def test_invalid_job_status_is_rejected():
    with pytest.raises(ExpressionError, match="invalid job_status"):
        ev("success()", job_status="skipped")


# --- syntax errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "message", "position"),
    [
        ("", "empty expression", 0),
        ("   ", "empty expression", 0),
        ("'abc", "unterminated string literal", 0),
        ("a == 'it''s", "unterminated string literal", 5),
        ('"abc"', "use single quotes for strings", 0),
        ("a == b )", "unexpected token ')' at position 7", 7),
        ("1 2", "unexpected token '2' at position 2", 2),
        ("a ==", "unexpected end of expression", 4),
        ("(a", "unexpected end of expression", 2),
        ("a[0", "unexpected end of expression", 3),
        ("a.", "expected a property name", 2),
        ("a.'b'", "expected a property name", 2),
        ("a = b", "unexpected character '=' at position 2", 2),
        ("a & b", "unexpected character '&' at position 2", 2),
        ("a + 1", "unexpected character '+'", 2),
        ("1abc", "unexpected token 'abc'", 1),
        ("- 1", "unexpected character '-'", 0),
        ("foo(1)", "unknown function 'foo'", 0),
        ("x && hashFiles('a')", "unknown function 'hashFiles'", 5),
        ("contains('a')", "function 'contains' takes 2 arguments, got 1", 0),
        ("success(1)", "function 'success' takes 0 arguments, got 1", 0),
        ("join(a, b, c)", "function 'join' takes 1 to 2 arguments, got 3", 0),
        ("format()", "function 'format' takes at least 1 argument, got 0", 0),
        ("toJSON()", "function 'toJSON' takes 1 argument, got 0", 0),
        ("contains('a', )", "unexpected token ')'", 14),
        ("${{ a }}", "unexpected character '$'", 0),
    ],
)
def test_syntax_errors_report_message_and_position(source, message, position):
    with pytest.raises(ExpressionError, match=re.escape(message)) as info:
        parse(source)
    assert info.value.position == position
    assert info.value.source == source
    assert info.value.message == str(info.value)


def test_expression_error_is_a_value_error():
    with pytest.raises(ValueError):
        parse(")")


def test_excessive_nesting_is_a_syntax_error_not_a_recursion_error():
    with pytest.raises(ExpressionError, match="nested too deeply"):
        parse("(" * 500 + "1" + ")" * 500)
    with pytest.raises(ExpressionError, match="nested too deeply"):
        parse("!" * 5000 + "true")
    with pytest.raises(ExpressionError, match="nested too deeply"):
        parse("a" + ".b" * 5000)


def test_long_logical_chains_are_not_limited_by_nesting():
    source = " || ".join(f"inputs.count == {n}" for n in range(500))
    assert ev(source) is True


def test_function_names_are_case_insensitive_and_canonicalised():
    assert parse("TOJSON(1)") == parse("toJson(1)")
    assert ev("FROMjson('[1]')") == [1]


def test_parse_results_are_cached_and_immutable():
    tree = parse("inputs.name == 'x'")
    assert parse("inputs.name == 'x'") is tree
    with pytest.raises(AttributeError):
        tree.op = "!="


def test_evaluate_accepts_a_parsed_expression():
    assert evaluate(parse("inputs.count >= 3"), CONTEXT) is True


# --- templates ---------------------------------------------------------------------------------


def test_find_templates_returns_spans_and_inner_sources():
    text = "a ${{ inputs.name }} b ${{1}}"
    assert find_templates(text) == [(2, 20, " inputs.name "), (23, 29, "1")]
    for start, end, _ in find_templates(text):
        assert text[start : start + 3] == "${{" and text[end - 2 : end] == "}}"


def test_find_templates_ignores_closing_braces_inside_string_literals():
    text = "x ${{ format('{0}}}', 'a}}b') }} y"
    [(start, end, inner)] = find_templates(text)
    assert inner == " format('{0}}}', 'a}}b') "
    assert text[end:] == " y"
    assert render(text, CONTEXT) == "x a}}b} y"


def test_find_templates_handles_escaped_quotes_in_strings():
    [(_, _, inner)] = find_templates("${{ 'it''s }}' }}")
    assert inner == " 'it''s }}' "


def test_find_templates_of_plain_text_is_empty():
    assert find_templates("no templates { } }} $ {{") == []
    assert find_templates("") == []


@pytest.mark.parametrize(
    ("text", "position"),
    [("abc ${{ inputs.x", 4), ("${{ 'never closed }}", 0), ("${{ a }} ${{ b }", 9)],
)
def test_unclosed_template_raises_with_position(text, position):
    with pytest.raises(ExpressionError, match="unclosed '\\$\\{\\{'") as info:
        find_templates(text)
    assert info.value.position == position
    assert info.value.source == text


def test_has_templates_detects_template_openings():
    assert has_templates("x ${{ a }}") is True
    assert has_templates("x { a }") is False


# --- references --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("steps.build.outputs.sha == inputs.x", {("steps", "build", "outputs", "sha"), ("inputs", "x")}),
        ("steps['build'].outputs['sha']", {("steps", "build", "outputs", "sha")}),
        ("inputs[steps.a.outputs.k]", {("inputs",), ("steps", "a", "outputs", "k")}),
        ("inputs[steps.a.outputs.k].deeper", {("inputs",), ("steps", "a", "outputs", "k")}),
        ("inputs.list[0].name", {("inputs", "list", "0", "name")}),
        ("steps.*.status", {("steps",)}),
        ("steps.my-step.outputs.x", {("steps", "my-step", "outputs", "x")}),
        (
            "contains(join(trigger.labels), env.X) || !run.id",
            {("trigger", "labels"), ("env", "X"), ("run", "id")},
        ),
        ("fromJSON(inputs.json).a.b", {("inputs", "json")}),
        ("format('{0}', 1) == 'x' && success()", set()),
        ("inputs", {("inputs",)}),
    ],
)
def test_references_lists_statically_known_context_paths(source, expected):
    assert references(source) == expected
    assert references(parse(source)) == expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("success()", True),
        ("failure() || inputs.x", True),
        ("!cancelled()", True),
        ("contains(format('{0}', always()), 'true')", True),
        ("inputs.success", False),
        ("'failure()'", False),
        ("contains(inputs.x, 'y')", False),
    ],
)
def test_uses_status_function_detects_status_calls_anywhere(source, expected):
    assert uses_status_function(source) is expected


# --- render ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("${{ inputs.count }}", 3),
        ("  ${{ inputs.flag }}\n", True),
        ("${{ inputs.missing }}", None),
        ("${{ inputs }}", CONTEXT["inputs"]),
        ("${{ run.ratio }}", 0.5),
    ],
)
def test_render_of_a_single_template_returns_the_typed_value(text, expected):
    assert render(text, CONTEXT) == expected
    assert type(render(text, CONTEXT)) is type(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello ${{ inputs.name }}!", "Hello World!"),
        ("${{ inputs.count }}${{ inputs.flag }}", "3true"),
        ("[${{ inputs.missing }}]", "[]"),
        ("list=${{ inputs.list }}", 'list=["a","b","c"]'),
        ("${{ 1 }} ${{ 2.0 }} ${{ false }}", "1 2 false"),
        ("run-${{ run.id }}", "run-42"),
    ],
)
def test_render_interpolates_display_strings_into_text(text, expected):
    assert render(text, CONTEXT) == expected


def test_render_returns_text_without_templates_unchanged():
    assert render("plain {{ text }}", CONTEXT) == "plain {{ text }}"


def test_render_propagates_expression_errors():
    with pytest.raises(ExpressionError, match="unknown context 'nope'"):
        render("x ${{ nope.y }}", CONTEXT)
    with pytest.raises(ExpressionError, match="empty expression"):
        render("${{ }}", CONTEXT)


def test_render_value_renders_nested_strings_but_not_keys():
    value = {
        "${{ inputs.name }}": "${{ inputs.count }}",
        "items": ["a-${{ inputs.name }}", {"deep": "${{ inputs.flag }}"}, 7, None],
        "number": 1.5,
    }
    assert render_value(value, CONTEXT) == {
        "${{ inputs.name }}": 3,
        "items": ["a-World", {"deep": True}, 7, None],
        "number": 1.5,
    }


def test_render_value_passes_non_string_scalars_through():
    assert render_value(5, CONTEXT) == 5
    assert render_value(None, CONTEXT) is None
    assert render_value((1, "${{ run.id }}"), CONTEXT) == [1, 42]


# --- evaluate_condition ------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["EXPR", "${{ EXPR }}", "  ${{EXPR}}\n"])
def test_condition_may_be_bare_or_wrapped(shape):
    assert evaluate_condition(shape.replace("EXPR", "inputs.count == 3"), CONTEXT) is True
    assert evaluate_condition(shape.replace("EXPR", "inputs.count == 4"), CONTEXT) is False


@pytest.mark.parametrize(
    ("job_status", "expected"),
    [("success", True), ("failure", False), ("cancelled", False)],
)
def test_condition_without_status_function_implies_success(job_status, expected):
    assert evaluate_condition("inputs.flag", CONTEXT, job_status=job_status) is expected


def test_condition_implicit_success_does_not_evaluate_the_expression_after_failure():
    assert evaluate_condition("unknown.context", CONTEXT, job_status="failure") is False


@pytest.mark.parametrize(
    ("source", "job_status", "expected"),
    [
        ("always()", "success", True),
        ("always()", "failure", True),
        ("always()", "cancelled", True),
        ("failure()", "success", False),
        ("failure()", "failure", True),
        ("failure()", "cancelled", False),
        ("cancelled()", "success", False),
        ("cancelled()", "failure", False),
        ("cancelled()", "cancelled", True),
        ("success()", "success", True),
        ("success()", "failure", False),
        ("success()", "cancelled", False),
        ("${{ failure() && inputs.flag }}", "failure", True),
        ("always() && inputs.empty", "failure", False),
        ("!cancelled()", "failure", True),
    ],
)
def test_condition_with_status_function_uses_it_instead_of_success(source, job_status, expected):
    assert evaluate_condition(source, CONTEXT, job_status=job_status) is expected


def test_condition_returns_truthiness_as_bool():
    assert evaluate_condition("inputs.name", CONTEXT) is True
    assert evaluate_condition("inputs.empty", CONTEXT) is False


def test_blank_condition_means_success():
    assert evaluate_condition("  ", CONTEXT) is True
    assert evaluate_condition("", CONTEXT, job_status="failure") is False


def test_condition_mixing_templates_and_text_is_rejected():
    with pytest.raises(ExpressionError, match="single expression"):
        evaluate_condition("${{ inputs.flag }} && true", CONTEXT)


# --- coercions ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, ""),
        (True, "true"),
        (False, "false"),
        (0, "0"),
        (-7, "-7"),
        (3.0, "3"),
        (-0.0, "0"),
        (2.5, "2.5"),
        (0.1, "0.1"),
        (1e21, "1e+21"),
        (1.5e-7, "1.5e-7"),
        (math.nan, "NaN"),
        (math.inf, "Infinity"),
        (-math.inf, "-Infinity"),
        ("text", "text"),
        ("", ""),
        ({"a": [1, 2.0, None], "b": "é"}, '{"a":[1,2,null],"b":"é"}'),
        ([], "[]"),
        ({}, "{}"),
    ],
)
def test_to_display_string_follows_github_coercion(value, expected):
    assert to_display_string(value) == expected


def test_to_display_string_rejects_non_json_values_with_expression_error():
    with pytest.raises(ExpressionError, match="cannot be converted to JSON"):
        to_display_string({"a": object()})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, False),
        (False, False),
        (0, False),
        (0.0, False),
        (-0.0, False),
        (math.nan, False),
        ("", False),
        (True, True),
        (1, True),
        (-1, True),
        (0.5, True),
        ("0", True),
        ("false", True),
        (" ", True),
        ({}, True),
        ([], True),
    ],
)
def test_is_truthy_follows_github_truthiness(value, expected):
    assert is_truthy(value) is expected


# --- properties --------------------------------------------------------------------------------

TEMPLATE_ALPHABET = st.sampled_from(list("${}'() .a1!=&|,[]*\"-") + ["${{", "}}", "''", "\n"])
NOISY_TEXT = st.one_of(st.text(), st.lists(TEMPLATE_ALPHABET, max_size=30).map("".join))


@FAST
@given(st.text().filter(lambda s: "${{" not in s))
def test_render_of_text_without_templates_is_identity(text):
    assert render(text, CONTEXT) == text


def quote(text):
    return "'" + text.replace("'", "''") + "'"


@FAST
@given(st.text())
def test_string_literals_round_trip_and_equal_themselves(text):
    literal = quote(text)
    assert evaluate(literal, {}) == text
    assert evaluate(f"{literal} == {literal}", {}) is True
    assert render("${{ " + literal + " }}", {}) == text


@settings(max_examples=400, deadline=None, database=None)
@given(NOISY_TEXT)
def test_find_templates_parse_and_evaluate_fail_only_with_expression_error(text):
    try:
        sources = [text, *(inner for _, _, inner in find_templates(text))]
    except ExpressionError as exc:
        assert exc.position is not None and 0 <= exc.position < len(text)
        sources = [text]
    for source in sources:
        try:
            evaluate(parse(source), CONTEXT)
        except ExpressionError as exc:
            assert exc.position is None or 0 <= exc.position <= len(source)


@FAST
@given(st.integers(), st.integers())
def test_integer_less_than_matches_python(a, b):
    assert evaluate(f"{a} < {b}", {}) is (a < b)
    assert evaluate(f"{a} == {b}", {}) is (a == b)


@FAST
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.text(max_size=5),
        lambda children: (
            st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3)
        ),
        max_leaves=10,
    )
)
def test_to_json_and_from_json_round_trip_json_values(value):
    assert evaluate("fromJSON(toJSON(v.x))", {"v": {"x": value}}) == value
