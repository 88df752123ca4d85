//! Which engine runs the node's profiles (design §1.5, §4a): one process
//! serves every active zapret Strategy, so their `implementation`s must
//! agree. Pure.
//!
//! - `auto`: nfqws/winws when found, else the built-in engine — unless the
//!   Strategy uses an option outside the built-in subset, then nfqws only;
//! - `external`: nfqws/winws only (`EngineMissing` without it);
//! - `builtin`: the built-in engine only (`UnsupportedOption` naming the
//!   option the subset lacks).
//!
//! The first Strategy by priority that can run decides; the others that
//! cannot run on that engine are `Failed` (`ImplementationConflict`).

use veil_crds::strategy::ZapretImplementation;
use veil_crds::wire::StrategyId;

/// Which program runs the profiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineKind {
    /// `veil-agent desync`.
    Builtin,
    /// nfqws (Linux) or winws (Windows).
    External,
}

impl EngineKind {
    fn name(self) -> &'static str {
        match self {
            EngineKind::Builtin => "builtin",
            EngineKind::External => "external",
        }
    }
}

/// Why a Strategy is left out of the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// `EmptyHostList`, `UnsupportedOption`, `EngineMissing`, …
    pub reason: String,
    pub message: String,
}

impl Failure {
    pub fn new(reason: &str, message: impl Into<String>) -> Failure {
        Failure {
            reason: reason.to_owned(),
            message: message.into(),
        }
    }
}

/// What one Strategy asks for.
#[derive(Clone, Debug)]
pub struct Wish {
    pub strategy: StrategyId,
    pub implementation: ZapretImplementation,
    /// The built-in parser's refusal of its args, if any (names the option).
    pub builtin_refusal: Option<String>,
}

/// What is installed on this node.
#[derive(Clone, Copy, Debug)]
pub struct Available {
    /// nfqws (Linux) / winws (Windows) was found.
    pub external: bool,
    /// The built-in engine runs here (Linux).
    pub builtin: bool,
}

/// The outcome of [`choose`].
#[derive(Clone, Debug)]
pub struct Choice {
    /// The engine; `None` when no Strategy can run.
    pub engine: Option<EngineKind>,
    /// Per Strategy, in the order given: it joins the engine, or why not.
    pub verdicts: Vec<(StrategyId, Result<(), Failure>)>,
}

/// Chooses the engine for `wishes` (in profile order).
pub fn choose(wishes: &[Wish], available: Available) -> Choice {
    let mut chosen: Option<(EngineKind, &StrategyId)> = None;
    let mut verdicts = Vec::with_capacity(wishes.len());
    for wish in wishes {
        let verdict = match feasible(wish, available) {
            Err(failure) => Err(failure),
            Ok(kinds) => match chosen {
                None => {
                    chosen = Some((kinds[0], &wish.strategy));
                    Ok(())
                }
                Some((kind, _)) if kinds.contains(&kind) => Ok(()),
                Some((kind, first)) => Err(Failure::new(
                    "ImplementationConflict",
                    format!(
                        "this node runs one engine for every Strategy and `{first}` (earlier by priority) chose the {} engine; \
                         this one can only run on the {} engine: set zapret.implementation to auto or {} here, or change `{first}`",
                        kind.name(),
                        kinds[0].name(),
                        kind.name(),
                    ),
                )),
            },
        };
        verdicts.push((wish.strategy.clone(), verdict));
    }
    Choice {
        engine: chosen.map(|(kind, _)| kind),
        verdicts,
    }
}

/// The engines `wish` can run on, preferred first.
fn feasible(wish: &Wish, available: Available) -> Result<Vec<EngineKind>, Failure> {
    let missing_external = || {
        Failure::new(
            "EngineMissing",
            "zapret.implementation is external but neither nfqws nor winws is on the agent's PATH: install zapret there, or use implementation auto or builtin",
        )
    };
    let unsupported = |message: &str| Failure::new("UnsupportedOption", message);
    let builtin_missing = || {
        Failure::new(
            "EngineMissing",
            "the built-in engine runs on Linux only: install winws (zapret) on the agent's PATH",
        )
    };
    match wish.implementation {
        ZapretImplementation::External if available.external => Ok(vec![EngineKind::External]),
        ZapretImplementation::External => Err(missing_external()),
        ZapretImplementation::Builtin if !available.builtin => Err(builtin_missing()),
        ZapretImplementation::Builtin => match &wish.builtin_refusal {
            Some(message) => Err(unsupported(message)),
            None => Ok(vec![EngineKind::Builtin]),
        },
        ZapretImplementation::Auto => {
            let mut kinds = Vec::with_capacity(2);
            if available.external {
                kinds.push(EngineKind::External);
            }
            if available.builtin && wish.builtin_refusal.is_none() {
                kinds.push(EngineKind::Builtin);
            }
            if kinds.is_empty() {
                return Err(match &wish.builtin_refusal {
                    Some(message) if available.builtin => unsupported(message),
                    _ => builtin_missing(),
                });
            }
            Ok(kinds)
        }
    }
}

#[cfg(test)]
mod tests;
