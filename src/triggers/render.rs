//! Rendering at run time: `vars`, `when`, a digest's key, the action's request and the sinks' write-backs.

use std::collections::HashMap;

use minijinja::{Environment, Value as JinjaValue};
use serde_json::{Map, Value};

use super::{
    template::{describe, CONDITION_HOLDS, FENCE_NOTE, PERSONA_NAME_CHARS},
    Action, RenderError, Rendered, Trigger, TriggerTable,
};

/// Per template, the names the context may be read by: every identifier in its source, a superset of the
/// variables it reads (minijinja's own analysis misses some, e.g. `user_id[:12]`). A template that may read
/// more than it names (`include`, `import`, `extends`, `debug()`) is left out, and is given the whole
/// context.
pub(super) fn reads_of(env: &Environment<'static>) -> HashMap<String, Box<[String]>> {
    env.templates()
        .filter_map(|(name, t)| {
            let mut words: Vec<String> = t
                .source()
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_'))
                .map(str::to_string)
                .collect();
            let open = ["include", "import", "extends", "debug"];
            if words.iter().any(|w| open.contains(&w.as_str())) {
                return None;
            }
            words.sort();
            words.dedup();
            Some((name.to_string(), words.into_boxed_slice()))
        })
        .collect()
}

impl TriggerTable {
    /// What `template` sees of `ctx`: only the names it may read. Converting a whole event's context (its
    /// payload twice over) for a template that prints two of its fields was a sixth of a persona job's CPU.
    fn view(&self, template: &str, ctx: &Map<String, Value>) -> JinjaValue {
        match self.reads.get(template) {
            Some(names) => names
                .iter()
                .filter_map(|n| Some((n.as_str(), JinjaValue::from_serialize(ctx.get(n)?))))
                .collect(),
            None => JinjaValue::from_serialize(ctx),
        }
    }

    fn render_str(
        &self,
        trigger: &Trigger,
        what: &str,
        template: &str,
        ctx: &Map<String, Value>,
    ) -> Result<String, RenderError> {
        self.env
            .get_template(template)
            .and_then(|t| t.render(self.view(template, ctx)))
            .map_err(|e| RenderError {
                trigger: trigger.name.clone(),
                what: what.to_string(),
                message: describe(&e),
            })
    }

    /// Adds the trigger's `vars` to an event's context, in order (each may use the ones before it).
    pub fn prepare(
        &self,
        trigger: &Trigger,
        mut ctx: Map<String, Value>,
    ) -> Result<Map<String, Value>, RenderError> {
        for (var, template) in &trigger.vars {
            let value = self.render_str(trigger, &format!("vars.{var}"), template, &ctx)?;
            ctx.insert(var.clone(), Value::String(value.trim().to_string()));
        }
        Ok(ctx)
    }

    /// Evaluates `when` (true when there is none): its compiled template prints [`CONDITION_HOLDS`] or nothing.
    pub fn condition_holds(
        &self,
        trigger: &Trigger,
        ctx: &Map<String, Value>,
    ) -> Result<bool, RenderError> {
        let Some(when) = &trigger.when else {
            return Ok(true);
        };
        let held = self.render_str(trigger, "when", &when.template, ctx)?;
        Ok(held == CONDITION_HOLDS)
    }

    /// The key an event is gathered under in a digest trigger (`by`, rendered; empty without `by`).
    pub fn digest_key(
        &self,
        trigger: &Trigger,
        ctx: &Map<String, Value>,
    ) -> Result<String, RenderError> {
        match trigger.digest.as_ref().and_then(|d| d.by.as_deref()) {
            Some(template) => Ok(self
                .render_str(trigger, "digest.by", template, ctx)?
                .trim()
                .to_string()),
            None => Ok(String::new()),
        }
    }

    /// Renders each sink's write-back templates against the event's context and the `outcome`: per sink,
    /// `{group: {key: value}}` (empty for sinks without templates), or why it could not be rendered. The
    /// rendered strings are data: they are sent as JSON strings, never evaluated again.
    pub fn render_sinks(
        &self,
        trigger: &Trigger,
        ctx: &Map<String, Value>,
        outcome: &Value,
    ) -> Vec<Result<Value, RenderError>> {
        // Nothing to render (no sinks, or none with templates): no copy of the context, no template view
        // of it. Building that view was the largest JSON cost of a persona job with no sinks.
        if trigger.sink_templates.iter().all(Vec::is_empty) {
            return trigger
                .sink_templates
                .iter()
                .map(|_| Ok(Value::Object(Map::new())))
                .collect();
        }
        let mut ctx = ctx.clone();
        let mut view = outcome.as_object().cloned().unwrap_or_default();
        if view.get("persona_type").is_none_or(Value::is_null) {
            if let Some(t) = ctx.get("persona_type") {
                view.insert("persona_type".into(), t.clone());
            }
        }
        ctx.insert("outcome".into(), Value::Object(view));
        trigger
            .sink_templates
            .iter()
            .enumerate()
            .map(|(i, templates)| {
                let mut groups = Map::new();
                for (group, key, template) in templates {
                    let value = self.render_str(
                        trigger,
                        &format!("sinks[{i}].{group}.{key}"),
                        template,
                        &ctx,
                    )?;
                    groups
                        .entry(group.to_string())
                        .or_insert_with(|| Value::Object(Map::new()))
                        .as_object_mut()
                        .expect("groups are objects")
                        .insert(key.clone(), Value::String(value.trim().to_string()));
                }
                Ok(Value::Object(groups))
            })
            .collect()
    }

    /// Renders the trigger's action for one event.
    pub fn render(
        &self,
        trigger: &Trigger,
        ctx: &Map<String, Value>,
    ) -> Result<Rendered, RenderError> {
        match &trigger.action {
            Action::CreatePersona {
                name,
                description,
                fields,
            } => {
                let mut body = Map::new();
                if let Value::Object(extra) =
                    self.render_json(trigger, "create_persona.fields", fields, ctx)?
                {
                    body.extend(extra);
                }
                let name = self.render_str(trigger, "create_persona.name", name, ctx)?;
                body.insert(
                    "name".into(),
                    Value::String(persona_name(trigger, name.trim())?),
                );
                body.insert(
                    "description".into(),
                    Value::String(
                        self.render_str(trigger, "create_persona.description", description, ctx)?
                            .trim()
                            .to_string(),
                    ),
                );
                Ok(Rendered::CreatePersona {
                    body: Value::Object(body),
                })
            }
            Action::Research {
                message,
                title,
                summary,
            } => {
                let opt = |what: &str, t: &Option<String>| -> Result<Option<String>, RenderError> {
                    t.as_ref()
                        .map(|t| {
                            self.render_str(trigger, what, t, ctx)
                                .map(|s| s.trim().to_string())
                        })
                        .transpose()
                };
                let mut message = self
                    .render_str(trigger, "research.message", message, ctx)?
                    .trim()
                    .to_string();
                if message.contains('«') {
                    message.push_str("\n\n");
                    message.push_str(FENCE_NOTE);
                }
                Ok(Rendered::Research {
                    message,
                    title: opt("research.title", title)?,
                    summary: opt("research.summary", summary)?,
                })
            }
        }
    }

    fn render_json(
        &self,
        trigger: &Trigger,
        what: &str,
        value: &Value,
        ctx: &Map<String, Value>,
    ) -> Result<Value, RenderError> {
        Ok(match value {
            Value::String(template) => {
                Value::String(self.render_str(trigger, what, template, ctx)?)
            }
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|v| self.render_json(trigger, what, v, ctx))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| {
                        Ok((
                            k.clone(),
                            self.render_json(trigger, &format!("{what}.{k}"), v, ctx)?,
                        ))
                    })
                    .collect::<Result<_, RenderError>>()?,
            ),
            other => other.clone(),
        })
    }
}

/// A persona name within Mavera's 2–100 characters: cut (with an ellipsis) when longer, refused when shorter.
fn persona_name(trigger: &Trigger, name: &str) -> Result<String, RenderError> {
    let count = name.chars().count();
    if count < *PERSONA_NAME_CHARS.start() {
        return Err(RenderError {
            trigger: trigger.name.clone(),
            what: "create_persona.name".into(),
            message: format!("renders to {count} characters; Mavera needs 2 to 100"),
        });
    }
    if count > *PERSONA_NAME_CHARS.end() {
        let mut cut: String = name.chars().take(PERSONA_NAME_CHARS.end() - 1).collect();
        cut.push('…');
        return Ok(cut);
    }
    Ok(name.to_string())
}
