//! Label selectors with Kubernetes semantics, without Kubernetes types.

use std::collections::BTreeMap;

/// What is wrong with a selector.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error("unknown selector operator {0:?}; expected In, NotIn, Exists or DoesNotExist")]
    UnknownOperator(String),
    #[error("selector requirement on {key:?}: operator {operator} needs at least one value")]
    MissingValues { key: String, operator: &'static str },
    #[error("selector requirement on {key:?}: operator {operator} takes no values")]
    UnexpectedValues { key: String, operator: &'static str },
}

/// The operator of one requirement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SelectorOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl SelectorOperator {
    pub fn as_str(self) -> &'static str {
        match self {
            SelectorOperator::In => "In",
            SelectorOperator::NotIn => "NotIn",
            SelectorOperator::Exists => "Exists",
            SelectorOperator::DoesNotExist => "DoesNotExist",
        }
    }
}

impl std::str::FromStr for SelectorOperator {
    type Err = SelectorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "In" => Ok(SelectorOperator::In),
            "NotIn" => Ok(SelectorOperator::NotIn),
            "Exists" => Ok(SelectorOperator::Exists),
            "DoesNotExist" => Ok(SelectorOperator::DoesNotExist),
            other => Err(SelectorError::UnknownOperator(other.to_owned())),
        }
    }
}

/// One `matchExpressions` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    key: String,
    operator: SelectorOperator,
    values: Vec<String>,
}

impl Requirement {
    /// Builds a requirement, refusing value lists that do not suit the operator.
    pub fn new(
        key: impl Into<String>,
        operator: SelectorOperator,
        values: Vec<String>,
    ) -> Result<Self, SelectorError> {
        let key = key.into();
        match operator {
            SelectorOperator::In | SelectorOperator::NotIn if values.is_empty() => {
                Err(SelectorError::MissingValues {
                    key,
                    operator: operator.as_str(),
                })
            }
            SelectorOperator::Exists | SelectorOperator::DoesNotExist if !values.is_empty() => {
                Err(SelectorError::UnexpectedValues {
                    key,
                    operator: operator.as_str(),
                })
            }
            _ => Ok(Requirement {
                key,
                operator,
                values,
            }),
        }
    }

    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            SelectorOperator::In => value.is_some_and(|v| self.values.contains(v)),
            SelectorOperator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            SelectorOperator::Exists => value.is_some(),
            SelectorOperator::DoesNotExist => value.is_none(),
        }
    }
}

/// A label selector: every `match_labels` pair and every requirement must hold. An empty
/// selector matches everything, as in Kubernetes.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct LabelSelector {
    pub match_labels: BTreeMap<String, String>,
    pub match_expressions: Vec<Requirement>,
}

impl LabelSelector {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| r.matches(labels))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn operators_follow_kubernetes_semantics() {
        let l = labels(&[("tier", "gold"), ("gpu", "yes")]);
        let req = |k: &str, op, vals: &[&str]| {
            Requirement::new(k, op, vals.iter().map(|s| s.to_string()).collect()).unwrap()
        };
        let sel = |r: Requirement| LabelSelector {
            match_expressions: vec![r],
            ..Default::default()
        };
        assert!(sel(req("tier", SelectorOperator::In, &["gold", "silver"])).matches(&l));
        assert!(!sel(req("tier", SelectorOperator::NotIn, &["gold"])).matches(&l));
        assert!(sel(req("zone", SelectorOperator::NotIn, &["a"])).matches(&l));
        assert!(sel(req("gpu", SelectorOperator::Exists, &[])).matches(&l));
        assert!(!sel(req("gpu", SelectorOperator::DoesNotExist, &[])).matches(&l));
        assert!(LabelSelector::default().matches(&l));
        let by_label = LabelSelector {
            match_labels: labels(&[("tier", "bronze")]),
            ..Default::default()
        };
        assert!(!by_label.matches(&l));
    }

    #[test]
    fn bad_requirements_are_refused_with_the_key_named() {
        let err = Requirement::new("tier", SelectorOperator::In, vec![]).unwrap_err();
        assert!(err.to_string().contains("\"tier\""), "{err}");
        assert!(Requirement::new("gpu", SelectorOperator::Exists, vec!["x".into()]).is_err());
        assert!("Maybe".parse::<SelectorOperator>().is_err());
    }
}
