//! Loading the trigger table: the TOML file checked, every template and condition compiled into one
//! environment, and each trigger rendered once against an empty event so that a typo fails at start-up.

use std::{path::Path, sync::Arc};

use minijinja::Environment;
use serde_json::{Map, Value};

use super::{
    config::{self, Enrichment, TriggerFile, TriggerSpec},
    template::{condition_template, describe, template_env},
    Action, AlertSettings, Condition, ConfigError, Digest, RenderError, Trigger, TriggerTable,
    DEFAULT_DIGEST_MAX,
};
use crate::sources::Source;

impl TriggerTable {
    /// Reads and compiles the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::from_toml(&text, &shown)
    }

    /// Compiles a table from TOML text; `path` is only used in messages.
    pub fn from_toml(text: &str, path: &str) -> Result<Self, ConfigError> {
        let file: TriggerFile = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        Self::compile(file, path)
    }

    fn compile(file: TriggerFile, path: &str) -> Result<Self, ConfigError> {
        let mut env = template_env();
        let mut triggers = Vec::new();
        let mut names = std::collections::HashSet::new();
        for spec in file.triggers {
            let invalid = |key: &str, problem: String, fix: &str| ConfigError::Invalid {
                path: path.to_string(),
                trigger: spec.name.clone(),
                key: key.to_string(),
                problem,
                fix: fix.to_string(),
            };
            if spec.name.trim().is_empty() {
                return Err(invalid(
                    "name",
                    "is empty".into(),
                    "give every trigger a unique name",
                ));
            }
            if !names.insert(spec.name.clone()) {
                return Err(invalid(
                    "name",
                    "is used twice".into(),
                    "give every trigger a unique name",
                ));
            }
            if !spec.enabled {
                continue;
            }
            let trigger = compile_trigger(&mut env, &spec, &invalid)?;
            triggers.push(Arc::new(trigger));
        }
        let alerts = compile_alerts(file.alerts, path)?;
        let reads = super::render::reads_of(&env);
        let table = Self {
            env,
            reads,
            triggers,
            limits: file.limits,
            alerts,
            path: path.to_string(),
        };
        table.smoke_render()?;
        Ok(table)
    }

    /// Renders every template against an empty event, so unknown filters and bad syntax fail at start-up.
    fn smoke_render(&self) -> Result<(), ConfigError> {
        let mut ctx = Map::new();
        ctx.insert("attributes".into(), Value::Object(Map::new()));
        for t in &self.triggers {
            let ctx = self
                .prepare(t, ctx.clone())
                .map_err(|e| self.invalid_at_load(t, e))?;
            if t.digest.is_some() {
                self.digest_key(t, &ctx)
                    .map_err(|e| self.invalid_at_load(t, e))?;
                let mut digest_ctx = ctx.clone();
                digest_ctx.insert(
                    "events".into(),
                    Value::Array(vec![Value::Object(ctx.clone())]),
                );
                digest_ctx.insert("key".into(), Value::from(""));
                digest_ctx.insert("count".into(), Value::from(1));
                self.render(t, &digest_ctx)
                    .map_err(|e| self.invalid_at_load(t, e))?;
            }
            self.condition_holds(t, &ctx)
                .map_err(|e| self.invalid_at_load(t, e))?;
            self.render(t, &ctx)
                .map_err(|e| self.invalid_at_load(t, e))?;
            let outcome =
                serde_json::json!({"title": "", "summary": "", "brief": "", "persona_id": ""});
            if let Some(Err(e)) = self
                .render_sinks(t, &ctx, &outcome)
                .into_iter()
                .find(Result::is_err)
            {
                return Err(self.invalid_at_load(t, e));
            }
        }
        Ok(())
    }

    fn invalid_at_load(&self, t: &Trigger, e: RenderError) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.clone(),
            trigger: t.name.clone(),
            key: e.what,
            problem: e.message,
            fix: "check the template against https://docs.rs/minijinja (filters, quoting, {% endif %})"
                .into(),
        }
    }
}

/// Every `${NAME}` a sink names must be set at start-up.
fn check_sinks(
    sinks: &[config::SinkSpec],
    invalid: &dyn Fn(&str, String, &str) -> ConfigError,
) -> Result<(), ConfigError> {
    for (i, sink) in sinks.iter().enumerate() {
        for setting in super::config::settings_of(sink) {
            super::config::expand_env(setting, &|k| std::env::var(k).ok()).map_err(|why| {
                invalid(
                    &format!("sinks[{i}]"),
                    why,
                    "set the variable (e.g. in .env), or remove the sink",
                )
            })?;
        }
    }
    Ok(())
}

fn compile_alerts(spec: config::AlertsSpec, path: &str) -> Result<AlertSettings, ConfigError> {
    let invalid = |key: &str, problem: String, fix: &str| ConfigError::Invalid {
        path: path.to_string(),
        trigger: "[alerts]".into(),
        key: key.to_string(),
        problem,
        fix: fix.to_string(),
    };
    let defaults = AlertSettings::default();
    let duration = |key: &str, value: Option<&str>, default| match value {
        None => Ok(default),
        Some(v) => humantime::parse_duration(v.trim())
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                invalid(
                    key,
                    format!("`{v}` is not a duration above 0"),
                    "write a duration such as \"1h\" or \"15m\"",
                )
            }),
    };
    let sinks = spec.sinks.unwrap_or(defaults.sinks);
    if let Some((i, sink)) = sinks.iter().enumerate().find(|(_, s)| {
        matches!(
            s,
            config::SinkSpec::Customerio { .. } | config::SinkSpec::Segment { .. }
        )
    }) {
        return Err(invalid(
            &format!("sinks[{i}]"),
            format!(
                "a `{}` sink writes outcomes back to a person; an alert is about the server",
                sink.kind()
            ),
            "use log, file, slack or webhook",
        ));
    }
    check_sinks(&sinks, &invalid)?;
    Ok(AlertSettings {
        repeat: duration("repeat", spec.repeat.as_deref(), defaults.repeat)?,
        backlog_age: duration(
            "backlog_age",
            spec.backlog_age.as_deref(),
            defaults.backlog_age,
        )?,
        upstream_down: duration(
            "upstream_down",
            spec.upstream_down.as_deref(),
            defaults.upstream_down,
        )?,
        sinks,
    })
}

fn compile_trigger(
    env: &mut Environment<'static>,
    spec: &TriggerSpec,
    invalid: &dyn Fn(&str, String, &str) -> ConfigError,
) -> Result<Trigger, ConfigError> {
    let when_fix =
        "write a minijinja expression, e.g. properties.plan in [\"pro\", \"enterprise\"]";
    if let Some(when) = &spec.when {
        // Checked as an expression first, so a syntax error reads as one (and cannot close the `if` early).
        env.compile_expression(when)
            .map_err(|e| invalid("when", describe(&e), when_fix))?;
    }
    let mut add = |key: &str, source: &str| -> Result<String, ConfigError> {
        let name = format!("{}::{key}", spec.name);
        env.add_template_owned(name.clone(), source.to_string())
            .map_err(|e| {
                invalid(
                    key,
                    describe(&e),
                    "fix the template syntax (minijinja: {{ value }}, {% if %}…{% endif %})",
                )
            })?;
        Ok(name)
    };
    if spec.events.is_empty() || spec.events.iter().any(|e| e.trim().is_empty()) {
        return Err(invalid(
            "events",
            "is empty".into(),
            "list the event names (Segment) or metrics (Customer.io) to match, or \"*\"",
        ));
    }
    if !spec.object_types.is_empty() && spec.source != Source::CustomerIo {
        return Err(invalid(
            "object_types",
            "only applies to Customer.io".into(),
            "remove it, or set source = \"customerio\"",
        ));
    }
    if spec.enrich == Some(Enrichment::CustomerioAttributes) && spec.source != Source::CustomerIo {
        return Err(invalid(
            "enrich",
            "customerio_attributes needs a Customer.io event".into(),
            "remove it, or set source = \"customerio\"",
        ));
    }
    let cooldown = spec
        .cooldown
        .as_deref()
        .map(|c| duration(invalid, "cooldown", c, "\"24h\" or \"30m\""))
        .transpose()?;
    if let Some(budget) = &spec.budget {
        if budget.per_hour.is_none() && budget.per_day.is_none() {
            return Err(invalid(
                "budget",
                "sets no limit".into(),
                "set per_hour and/or per_day, or remove it",
            ));
        }
    }
    let sinks = spec
        .sinks
        .clone()
        .unwrap_or_else(|| vec![config::SinkSpec::Log]);
    let mut sink_templates = Vec::new();
    for (i, sink) in sinks.iter().enumerate() {
        let mut compiled = Vec::new();
        for (group, key, source) in sink.templates() {
            compiled.push((
                group,
                key.to_string(),
                add(&format!("sinks[{i}].{group}.{key}"), source)?,
            ));
        }
        sink_templates.push(compiled);
    }
    check_sinks(&sinks, invalid)?;
    let digest = match &spec.digest {
        None => None,
        Some(d) => {
            let window = duration(invalid, "digest.window", &d.window, "\"1h\" or \"30m\"")?;
            if window.is_zero() || d.max == Some(0) {
                return Err(invalid(
                    "digest",
                    "a zero window or max would never gather anything".into(),
                    "set window above 0 and max to 1 or more",
                ));
            }
            Some(Digest {
                window,
                max: d.max.unwrap_or(DEFAULT_DIGEST_MAX),
                by: d.by.as_deref().map(|b| add("digest.by", b)).transpose()?,
                by_source: d.by.clone(),
            })
        }
    };
    let when = spec
        .when
        .as_ref()
        .map(|source| {
            Ok::<_, ConfigError>(Condition {
                source: source.clone(),
                template: add("when", &condition_template(source))?,
            })
        })
        .transpose()?;
    let mut vars = Vec::new();
    for (var, value) in &spec.vars {
        let Some(source) = value.as_str() else {
            return Err(invalid(
                &format!("vars.{var}"),
                "is not a string".into(),
                "write the value as a template string",
            ));
        };
        vars.push((var.clone(), add(&format!("vars.{var}"), source)?));
    }
    let filled = |key: &str, text: &str, fix: &str| {
        if text.trim().is_empty() {
            Err(invalid(key, "is empty".into(), fix))
        } else {
            Ok(())
        }
    };
    let action = match (&spec.create_persona, &spec.research) {
        (Some(persona), None) => {
            filled(
                "create_persona.name",
                &persona.name,
                "give the persona a name template (2–100 characters once rendered)",
            )?;
            let fields = toml_to_json(&toml::Value::Table(persona.fields.clone()));
            let fields = compile_json(&fields, "create_persona.fields", &mut add)?;
            Action::CreatePersona {
                name: add("create_persona.name", &persona.name)?,
                description: add("create_persona.description", &persona.description)?,
                fields,
            }
        }
        (None, Some(research)) => {
            filled(
                "research.message",
                &research.message,
                "write the question for Mave",
            )?;
            Action::Research {
                message: add("research.message", &research.message)?,
                title: research
                    .title
                    .as_deref()
                    .map(|t| add("research.title", t))
                    .transpose()?,
                summary: research
                    .summary
                    .as_deref()
                    .map(|t| add("research.summary", t))
                    .transpose()?,
            }
        }
        (Some(_), Some(_)) => {
            return Err(invalid(
                "create_persona/research",
                "both are set".into(),
                "give each trigger exactly one action; split it into two triggers",
            ))
        }
        (None, None) => {
            return Err(invalid(
                "create_persona/research",
                "neither is set".into(),
                "add a [triggers.create_persona] or [triggers.research] table",
            ))
        }
    };
    Ok(Trigger {
        name: spec.name.clone(),
        source: spec.source,
        events: spec.events.clone(),
        object_types: spec.object_types.clone(),
        enrich: spec.enrich,
        vars,
        when,
        action,
        cooldown,
        budget: spec.budget.unwrap_or_default(),
        sinks,
        sink_templates,
        digest,
    })
}

/// A duration setting of a trigger, or why it is not one.
fn duration(
    invalid: &dyn Fn(&str, String, &str) -> ConfigError,
    key: &str,
    text: &str,
    examples: &str,
) -> Result<std::time::Duration, ConfigError> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        invalid(
            key,
            format!("`{text}` is not a duration ({e})"),
            &format!("write a duration such as {examples}"),
        )
    })
}

fn compile_json(
    value: &Value,
    key: &str,
    add: &mut dyn FnMut(&str, &str) -> Result<String, ConfigError>,
) -> Result<Value, ConfigError> {
    Ok(match value {
        Value::String(s) => Value::String(add(key, s)?),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| compile_json(v, &format!("{key}[{i}]"), add))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), compile_json(v, &format!("{key}.{k}"), add)?)))
                .collect::<Result<_, ConfigError>>()?,
        ),
        other => other.clone(),
    })
}

fn toml_to_json(value: &toml::Value) -> Value {
    match value {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => Value::from(*f),
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(items) => Value::Array(items.iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => Value::Object(
            t.iter()
                .map(|(k, v)| (k.clone(), toml_to_json(v)))
                .collect(),
        ),
    }
}
