//! `Step.llm(id, prompt=None, **options)`: a Claude agent with workspace tools — its
//! prompt, model, limits, tools, `result=`/`fail_when=` contract and `safe_outputs=`.
//! Their checks against each other and the plan are validation's ([`crate::validate`],
//! [`crate::result::check`], [`crate::safe_outputs::check`]).

use std::collections::BTreeMap;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

use crate::plan::{Action, LlmAction, DEFAULT_LLM_TOOLS};
use crate::result::{FailWhen, ResultSpec};
use crate::worker::convert::{self, Options};

/// The action of `Step.llm()`: its `prompt` and its own options.
pub(in crate::worker) fn action(
    prompt: Option<Bound<'_, PyAny>>,
    options: &mut Options<'_>,
) -> PyResult<Action> {
    let prompt = convert::optional_string(prompt, "Step.llm(): prompt")?;
    let prompt_file =
        convert::optional_string(options.take("prompt_file")?, "Step.llm(): prompt_file")?;
    let inputs = match options.take("inputs")? {
        None => BTreeMap::new(),
        Some(value) => match convert::json_value(&value, "Step.llm(): inputs", 0)? {
            serde_json::Value::Object(map) => map.into_iter().collect(),
            _ => return Err(PyTypeError::new_err("Step.llm(): inputs must be a dict")),
        },
    };
    let model = convert::optional_string(options.take("model")?, "Step.llm(): model")?;
    let max_turns = options
        .take("max_turns")?
        .map(|v| convert::count(&v, "Step.llm(): max_turns"))
        .transpose()?;
    let tools = match options.take("tools")? {
        Some(value) => convert::string_list(&value, "Step.llm(): tools")?,
        None => DEFAULT_LLM_TOOLS.iter().map(|t| t.to_string()).collect(),
    };
    let (result, fail_when) = result_options(options)?;
    let system_prompt =
        convert::optional_string(options.take("system_prompt")?, "Step.llm(): system_prompt")?;
    let max_tokens = options
        .take("max_tokens")?
        .map(|v| convert::count(&v, "Step.llm(): max_tokens").map(u64::from))
        .transpose()?;
    let max_cost_usd = options
        .take("max_cost_usd")?
        .map(|v| convert::usd(&v, "Step.llm(): max_cost_usd"))
        .transpose()?;
    let safe_outputs = crate::worker::safe_outputs::from_options(options)?;
    let mcp = mcp_servers(options)?;
    Ok(Action::Llm(LlmAction {
        mcp,
        safe_outputs,
        prompt,
        prompt_file,
        inputs,
        model,
        max_turns,
        tools,
        max_tokens,
        max_cost_usd,
        result,
        fail_when,
        system_prompt,
    }))
}

/// `Step.llm(result=..., fail_when=...)`: `result` is `"verdict"` or a dict (a JSON
/// Schema); `fail_when` maps a result field to a value or a list of values that fail the
/// step. Their checks against each other are plan validation's ([`crate::result::check`]).
fn result_options(options: &mut Options<'_>) -> PyResult<(Option<ResultSpec>, Option<FailWhen>)> {
    let result = match options.take("result")? {
        None => None,
        Some(value) => match convert::json_value(&value, "Step.llm(): result", 0)? {
            serde_json::Value::String(name) if name == crate::result::VERDICT => {
                Some(ResultSpec::Shorthand(crate::result::Shorthand::Verdict))
            }
            serde_json::Value::Object(schema) => {
                Some(ResultSpec::Schema(schema.into_iter().collect()))
            }
            other => {
                return Err(PyValueError::new_err(format!(
                    "Step.llm(): result must be \"verdict\" or a JSON Schema dict, got {other}"
                )))
            }
        },
    };
    let fail_when = match options.take("fail_when")? {
        None => None,
        Some(value) => match convert::json_value(&value, "Step.llm(): fail_when", 0)? {
            serde_json::Value::Object(map) => Some(
                map.into_iter()
                    .map(|(field, values)| match values {
                        serde_json::Value::Array(values) => (field, values),
                        value => (field, vec![value]),
                    })
                    .collect(),
            ),
            other => {
                return Err(PyTypeError::new_err(format!(
                    "Step.llm(): fail_when must be a dict of result field to value(s), e.g. \
                     {{\"verdict\": \"reject\"}}, got {other}"
                )))
            }
        },
    };
    Ok((result, fail_when))
}

/// `Step.llm(mcp={"name": {"command": [...] | "url": "...", "tools": [...], ...}})`: each
/// server's shape is read here (unknown keys refused); its checks against the step are
/// validation's ([`crate::mcp::check`]). Pins are the lock file's alone.
fn mcp_servers(options: &mut Options<'_>) -> PyResult<BTreeMap<String, crate::mcp::McpServer>> {
    let Some(value) = options.take("mcp")? else {
        return Ok(BTreeMap::new());
    };
    let serde_json::Value::Object(map) = convert::json_value(&value, "Step.llm(): mcp", 0)? else {
        return Err(PyTypeError::new_err(
            "Step.llm(): mcp must be a dict of server name to its settings, e.g. \
             {\"fs\": {\"command\": [\"mcp-server-filesystem\", \".\"], \"tools\": [\"read_text_file\"]}}",
        ));
    };
    let mut servers = BTreeMap::new();
    for (name, settings) in map {
        let server: crate::mcp::McpServer = serde_json::from_value(settings).map_err(|e| {
            PyValueError::new_err(format!(
                "Step.llm(): mcp server '{name}': {e} (keys: command, env, url, bearer_secret, \
                 tools, timeout_secs, max_calls)"
            ))
        })?;
        if !server.pins.is_empty() {
            return Err(PyValueError::new_err(format!(
                "Step.llm(): mcp server '{name}': pins come from .plue/lock.json (run `plue lock`), \
                 not from the workflow"
            )));
        }
        servers.insert(name, server);
    }
    Ok(servers)
}
