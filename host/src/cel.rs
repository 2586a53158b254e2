//! Inline CEL filters: a predicate over the event, evaluated in the host.
//!
//! CEL is the expression language Kubernetes (validation rules, admission
//! policies) and Knative chose; operators who know it can filter without
//! writing a module. The expression sees one variable, `event`, whose `data`
//! field is the parsed JSON payload (and, for a CloudEvent, `ce` its
//! attributes, as in `data.ce`).
//!
//! Expressions come from config files and Trigger objects, data from webhook
//! callers: both are bounded, so that no expression text and no payload can
//! crash or stall the engine.
//! - Compiling: the text is at most [`MAX_EXPRESSION_BYTES`], its brackets
//!   and conditionals nest at most [`MAX_NESTING`] deep (checked on the text,
//!   before the parser's recursion is reached), the parsed tree is at most
//!   [`MAX_TREE_DEPTH`] deep with at most [`MAX_NODES`] nodes, and the parse
//!   runs on a thread with a stack sized for those bounds. Anything over is a
//!   located error, never a crash.
//! - Evaluating: every iteration of a macro (`all`, `exists`, `map`, ...)
//!   checks the run's deadline and a step budget ([`MAX_STEPS`]), so a
//!   quadratic expression over a large payload ends as a `timeout`; a macro
//!   over a value that is not a list or map is an error rather than the
//!   interpreter's panic, and any other panic inside it is caught. Deep
//!   trees and macros run on threads with big stacks, small loop-free ones
//!   inline, and only the parts of the payload an expression reads are
//!   parsed (see `reads`).

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use cel::common::ast::{ComprehensionExpr, EntryExpr, Expr, IdedExpr};
use cel::{ExecutionError, FunctionContext, Value};

mod reads;
use reads::Reads;

/// Longest expression accepted, in bytes.
pub const MAX_EXPRESSION_BYTES: usize = 8 * 1024;
/// Deepest nesting of brackets and conditionals in the text.
pub const MAX_NESTING: usize = 24;
/// Deepest parsed expression tree (long operator chains make deep trees).
pub const MAX_TREE_DEPTH: usize = 100;
/// Most nodes in the parsed tree.
pub const MAX_NODES: usize = 4000;
/// Most macro iterations one evaluation may take.
pub const MAX_STEPS: u64 = 2_000_000;

/// Trees at most this deep and without macros are evaluated on the calling
/// thread: their recursion fits any stack, and with no loop their time is
/// bounded by their size. Handing them to the pool cost more than evaluating.
const INLINE_DEPTH: usize = 12;

/// Stack for compiling and for evaluating: ample for the bounds above, in
/// debug builds too (the generated parser's frames are large).
const STACK_BYTES: usize = 64 << 20;

/// Name of the function wrapped around each macro's loop condition.
const STEP: &str = "@wasmtrigger_step";
/// Name of the function wrapped around each macro's range.
const ITERABLE: &str = "@wasmtrigger_iterable";

thread_local! {
    /// The deadline and steps left of the evaluation running on this thread.
    static BUDGET: Cell<Option<(Instant, u64)>> = const { Cell::new(None) };
}

/// Why an evaluation did not give a verdict.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CelError {
    /// The deadline or the step budget ran out.
    #[error("CEL expression `{0}` did not finish within its time limit")]
    Timeout(String),
    /// Anything else: a missing field, a type error, a non-boolean result.
    #[error("{0}")]
    Failed(String),
}

/// A compiled CEL predicate.
#[derive(Clone)]
pub struct CelFilter {
    source: String,
    expression: Arc<IdedExpr>,
    /// The parts of the payload it reads; None: all of it.
    reads: Option<Arc<Reads>>,
    /// Small and loop-free: evaluated on the calling thread.
    inline: bool,
    /// Holds the built-in functions; each evaluation uses a child scope of it.
    root: Arc<cel::Context<'static>>,
}

impl std::fmt::Debug for CelFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("CelFilter").field(&self.source).finish()
    }
}

impl PartialEq for CelFilter {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

fn expected() -> &'static str {
    "expected a boolean expression over `event`, like event.data.spec.replicas > 0"
}

/// Runs `f` on a thread with a large stack, catching a panic.
fn on_big_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    let handle = std::thread::Builder::new()
        .name("cel".into())
        .stack_size(STACK_BYTES)
        .spawn(f)
        .map_err(|e| format!("cannot start a CEL thread: {e}"))?;
    handle
        .join()
        .map_err(|p| format!("the CEL interpreter failed: {}", panic_text(&p)))
}

fn panic_text(payload: &Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".into())
}

/// Threads for evaluations: reused, started as needed, each with a stack
/// ample for the deepest tree allowed (tokio's own blocking threads have 2 MiB).
fn pool() -> Option<&'static tokio::runtime::Runtime> {
    static POOL: std::sync::OnceLock<Option<tokio::runtime::Runtime>> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .thread_name("cel")
            .thread_stack_size(STACK_BYTES)
            .max_blocking_threads(64)
            .build()
            .ok()
    })
    .as_ref()
}

/// Checks the text before the parser sees it: size, and how deep brackets
/// and `?:` conditionals nest (each level is a recursion in the parser).
fn check_text(source: &str) -> Result<(), String> {
    if source.len() > MAX_EXPRESSION_BYTES {
        return Err(format!(
            "the expression is {} bytes; at most {MAX_EXPRESSION_BYTES} are allowed",
            source.len()
        ));
    }
    let (mut depth, mut conditionals, mut quote): (usize, usize, Option<char>) = (0, 0, None);
    let mut chars = source.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(_), '\\') => {
                chars.next();
            }
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '(' | '[' | '{') => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(format!("brackets nest more than {MAX_NESTING} deep"));
                }
            }
            (None, ')' | ']' | '}') => depth = depth.saturating_sub(1),
            (None, '?') => {
                conditionals += 1;
                if conditionals > MAX_NESTING {
                    return Err(format!("more than {MAX_NESTING} `?:` conditionals"));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Checks the parsed tree's size and depth without recursing (the tree may
/// be deep), and rewrites each macro so that its iterations are counted.
/// Returns whether the tree is small enough to evaluate inline (see [`INLINE_DEPTH`]).
fn check_and_instrument(expr: &mut IdedExpr) -> Result<bool, String> {
    let mut stack: Vec<(&mut IdedExpr, usize)> = vec![(expr, 1)];
    let mut nodes = 0usize;
    let mut inline = true;
    while let Some((node, depth)) = stack.pop() {
        nodes += 1;
        inline &= depth <= INLINE_DEPTH;
        if nodes > MAX_NODES {
            return Err(format!("the expression has more than {MAX_NODES} parts"));
        }
        if depth > MAX_TREE_DEPTH {
            return Err(format!(
                "the expression nests more than {MAX_TREE_DEPTH} operations deep"
            ));
        }
        let next = depth + 1;
        match &mut node.expr {
            Expr::Call(call) => {
                if let Some(target) = call.target.as_deref_mut() {
                    stack.push((target, next));
                }
                stack.extend(call.args.iter_mut().map(|a| (a, next)));
            }
            Expr::Comprehension(c) => {
                inline = false;
                instrument(c);
                let c = &mut **c;
                stack.push((&mut c.iter_range, next));
                stack.push((&mut c.accu_init, next));
                stack.push((&mut c.loop_cond, next));
                stack.push((&mut c.loop_step, next));
                stack.push((&mut c.result, next));
            }
            Expr::List(list) => stack.extend(list.elements.iter_mut().map(|e| (e, next))),
            Expr::Map(map) => {
                for entry in &mut map.entries {
                    match &mut entry.expr {
                        EntryExpr::MapEntry(e) => {
                            stack.push((&mut e.key, next));
                            stack.push((&mut e.value, next));
                        }
                        EntryExpr::StructField(_) => {
                            return Err("message (struct) literals are not supported".into());
                        }
                    }
                }
            }
            Expr::Select(select) => stack.push((&mut select.operand, next)),
            Expr::Struct(_) => return Err("message (struct) literals are not supported".into()),
            Expr::Unspecified => return Err("the expression has an empty part".into()),
            Expr::Ident(_) | Expr::Literal(_) => {}
        }
    }
    Ok(inline)
}

/// Wraps a macro's range (must be a list or map) and its loop condition
/// (counts a step, checks the deadline) in the host's functions.
fn instrument(c: &mut ComprehensionExpr) {
    let wrap = |name: &str, inner: &mut IdedExpr| {
        let id = inner.id;
        let taken = std::mem::take(inner);
        *inner = IdedExpr {
            id,
            expr: Expr::Call(cel::common::ast::CallExpr {
                func_name: name.to_string(),
                target: None,
                args: vec![taken],
            }),
        };
    };
    wrap(ITERABLE, &mut c.iter_range);
    wrap(STEP, &mut c.loop_cond);
}

/// Counts one macro iteration against the budget of this thread's evaluation.
fn step(ftx: &FunctionContext, condition: Value) -> Result<Value, ExecutionError> {
    let exhausted = BUDGET.with(|b| match b.get() {
        Some((deadline, steps)) => {
            if steps == 0 || Instant::now() >= deadline {
                true
            } else {
                b.set(Some((deadline, steps - 1)));
                false
            }
        }
        None => false,
    });
    if exhausted {
        return Err(ftx.error("time limit"));
    }
    Ok(condition)
}

/// Lets a macro range over lists and maps only (anything else would panic
/// inside the interpreter).
fn iterable(ftx: &FunctionContext, range: Value) -> Result<Value, ExecutionError> {
    match range {
        Value::List(_) | Value::Map(_) => Ok(range),
        other => Err(ftx.error(format!(
            "a macro needs a list or a map, got {:?}",
            other.type_of()
        ))),
    }
}

impl CelFilter {
    /// Compiles a predicate; the error names the problem and what was expected.
    pub fn compile(source: &str) -> Result<Self, String> {
        Self::compile_as(source, expected())
    }

    /// Compiles an ordering key: an expression giving a string or a number.
    pub fn compile_key(source: &str) -> Result<Self, String> {
        Self::compile_as(
            source,
            "expected an expression over `event` giving a string or number, like event.data.body.orderId",
        )
    }

    fn compile_as(source: &str, expected: &'static str) -> Result<Self, String> {
        let shown: String = source.chars().take(120).collect();
        let shown = if shown.len() < source.len() {
            format!("{shown}…")
        } else {
            shown
        };
        let fail = |why: String| format!("invalid CEL expression `{shown}`: {why}; {expected}");
        check_text(source).map_err(&fail)?;
        let text = source.to_string();
        let (parsed, inline) = on_big_stack(move || -> Result<(IdedExpr, bool), String> {
            let mut expr = cel::parser::Parser::new()
                .max_recursion_depth(MAX_NESTING as u16 * 4)
                .parse(&text)
                .map_err(|e| {
                    // The parser draws a caret diagram over several lines; keep the reason lines.
                    let reason: Vec<String> = e
                        .to_string()
                        .lines()
                        .map(|l| l.trim().trim_start_matches("ERROR: <input>:").to_string())
                        .filter(|l| !l.is_empty() && !l.starts_with('|'))
                        .collect();
                    reason.join(" ")
                })?;
            let inline = check_and_instrument(&mut expr)?;
            Ok((expr, inline))
        })
        .map_err(&fail)?
        .map_err(&fail)?;
        let mut root = cel::Context::default();
        root.add_function(STEP, step);
        root.add_function(ITERABLE, iterable);
        Ok(CelFilter {
            source: source.to_string(),
            reads: Reads::of(&parsed).map(Arc::new),
            expression: Arc::new(parsed),
            inline,
            root: Arc::new(root),
        })
    }

    /// The same expression, parsing the whole payload (to test the pruning against).
    #[cfg(test)]
    pub(crate) fn reading_everything(mut self) -> Self {
        self.reads = None;
        self
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates the predicate against an event on the calling thread, with
    /// no deadline (tests, `invoke`); see [`CelFilter::evaluate_until`].
    pub fn evaluate(&self, event: &crate::event::Event) -> Result<bool, String> {
        self.evaluate_within(event, None).map_err(|e| e.to_string())
    }

    /// Evaluates the predicate, ending at `deadline`: a deep tree or one with
    /// macros off the async workers on a thread with an ample stack, a small
    /// loop-free one inline.
    pub async fn evaluate_until(
        &self,
        event: &crate::event::Event,
        deadline: Instant,
    ) -> Result<bool, CelError> {
        self.on_stack_for(event, move |filter, event| {
            filter.evaluate_within(event, Some(deadline))
        })
        .await
    }

    /// Evaluates an ordering key (see [`CelFilter::compile_key`]) like
    /// [`CelFilter::evaluate_until`]: a string as it is, a number or bool
    /// as its text; anything else is an error.
    pub async fn key_until(
        &self,
        event: &crate::event::Event,
        deadline: Instant,
    ) -> Result<String, CelError> {
        self.on_stack_for(event, move |filter, event| {
            match filter.resolve_within(event, Some(deadline))? {
                Value::String(s) => Ok(s.to_string()),
                Value::Int(i) => Ok(i.to_string()),
                Value::UInt(u) => Ok(u.to_string()),
                Value::Bool(b) => Ok(b.to_string()),
                other => Err(CelError::Failed(format!(
                    "CEL expression `{}` returned {:?}, expected a string or number",
                    filter.source,
                    other.type_of()
                ))),
            }
        })
        .await
    }

    /// Runs an evaluation where its stack suffices: inline for a small
    /// loop-free tree, otherwise on the pool's big-stack threads.
    async fn on_stack_for<T: Send + 'static>(
        &self,
        event: &crate::event::Event,
        run: impl FnOnce(&CelFilter, &crate::event::Event) -> Result<T, CelError> + Send + 'static,
    ) -> Result<T, CelError> {
        if self.inline {
            return run(self, event);
        }
        let (filter, event) = (self.clone(), event.clone());
        let job = move || run(&filter, &event);
        let joined = match pool() {
            Some(pool) => pool.spawn_blocking(job).await,
            None => tokio::task::spawn_blocking(job).await,
        };
        joined.unwrap_or_else(|_| {
            Err(CelError::Failed(format!(
                "CEL expression `{}` failed: the interpreter stopped",
                self.source
            )))
        })
    }

    fn evaluate_within(
        &self,
        event: &crate::event::Event,
        deadline: Option<Instant>,
    ) -> Result<bool, CelError> {
        match self.resolve_within(event, deadline)? {
            Value::Bool(pass) => Ok(pass),
            other => Err(CelError::Failed(format!(
                "CEL expression `{}` returned {:?}, expected a bool",
                self.source,
                other.type_of()
            ))),
        }
    }

    fn resolve_within(
        &self,
        event: &crate::event::Event,
        deadline: Option<Instant>,
    ) -> Result<Value, CelError> {
        let data = match &self.reads {
            Some(reads) => reads.parse(&event.data),
            None => serde_json::from_str(&event.data),
        }
        .map_err(|e| CelError::Failed(format!("event data is not valid JSON: {e}")))?;
        let text = |s: &str| Value::String(Arc::new(s.to_string()));
        let mut fields: HashMap<&str, Value> = HashMap::from([
            ("id", text(&event.id)),
            ("trigger", text(&event.trigger)),
            ("source", text(&event.source)),
            ("kind", text(&event.kind)),
            ("time", text(&event.time)),
        ]);
        // A CloudEvent's attributes are `event.ce` too (they live in `data.ce`).
        if let Some(ce) = data.get("ce").filter(|ce| ce.is_object()) {
            fields.insert("ce", json_to_cel(ce));
        }
        fields.insert("data", json_to_cel(&data));
        let value = Value::from(fields);
        BUDGET.with(|b| b.set(deadline.map(|d| (d, MAX_STEPS))));
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut scope = self.root.new_inner_scope();
            scope.add_variable_from_value("event", value);
            scope.resolve(&self.expression)
        }));
        let over = BUDGET.with(|b| {
            let over = b
                .get()
                .is_some_and(|(d, steps)| steps == 0 || Instant::now() >= d);
            b.set(None);
            over
        });
        match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(_)) if over => Err(CelError::Timeout(self.source.clone())),
            Ok(Err(e)) => Err(CelError::Failed(format!(
                "CEL expression `{}` failed: {e}",
                self.source
            ))),
            Err(panic) => Err(CelError::Failed(format!(
                "CEL expression `{}` failed: the interpreter gave up ({})",
                self.source,
                panic_text(&panic)
            ))),
        }
    }
}

/// Converts JSON the way Kubernetes CEL does: integers become `int` (not
/// `uint`), so `event.data.spec.replicas % 2 == 0` works with int literals;
/// integers beyond i64 become `uint`, other numbers `double`.
fn json_to_cel(value: &serde_json::Value) -> Value {
    use serde_json::Value as J;
    match value {
        J::Null => Value::Null,
        J::Bool(b) => Value::Bool(*b),
        J::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Value::Int(i),
            (None, Some(u)) => Value::UInt(u),
            _ => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        J::String(s) => Value::String(Arc::new(s.clone())),
        J::Array(items) => Value::List(Arc::new(items.iter().map(json_to_cel).collect())),
        J::Object(map) => {
            let converted: HashMap<String, Value> = map
                .iter()
                .map(|(k, v)| (k.clone(), json_to_cel(v)))
                .collect();
            Value::from(converted)
        }
    }
}

#[cfg(test)]
mod tests;
