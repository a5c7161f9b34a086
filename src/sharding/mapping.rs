//! List and range sharding: config rules that send chosen values to chosen
//! shards, checked once when the config is loaded and then looked up per row
//! by binary search.

use super::error::MappingError;
use super::value::{Kind, Value, ValueRef};

/// One rule of a mapping, as written in the sharding config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// These exact values go to `shard`.
    List { values: Vec<Value>, shard: usize },
    /// Values from `start` (inclusive) up to `end` (exclusive) go to `shard`;
    /// a missing bound leaves that side open. Text compares bytewise (the
    /// `C` collation), whatever the database's collation is.
    Range {
        start: Option<Value>,
        end: Option<Value>,
        shard: usize,
    },
    /// Everything no other rule takes, NULL included, goes to `shard`.
    Default { shard: usize },
}

impl Rule {
    pub fn shard(&self) -> usize {
        match self {
            Rule::List { shard, .. } | Rule::Range { shard, .. } | Rule::Default { shard } => {
                *shard
            }
        }
    }

    fn values(&self) -> impl Iterator<Item = &Value> {
        let (list, bounds): (&[Value], [Option<&Value>; 2]) = match self {
            Rule::List { values, .. } => (values, [None, None]),
            Rule::Range { start, end, .. } => (&[], [start.as_ref(), end.as_ref()]),
            Rule::Default { .. } => (&[], [None, None]),
        };
        list.iter().chain(bounds.into_iter().flatten())
    }
}

/// A range rule ready for lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Span {
    start: Option<Value>,
    end: Option<Value>,
    shard: usize,
    rule: usize,
}

impl Span {
    fn contains(&self, value: ValueRef<'_>) -> bool {
        self.start
            .as_ref()
            .is_none_or(|start| start.as_value_ref() <= value)
            && self
                .end
                .as_ref()
                .is_none_or(|end| value < end.as_value_ref())
    }
}

/// A validated set of list/range rules.
///
/// No value can match two rules: listed values are unique, ranges do not
/// overlap and no listed value falls in a range, so rule order does not
/// matter. A value no list or range takes goes to the default rule, if any.
/// NULL matches only the default rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// As given, for display.
    rules: Vec<Rule>,
    /// The kind of every value in the rules; `None` if there are none.
    kind: Option<Kind>,
    /// Every listed value with its shard and rule index, sorted by value.
    list: Vec<(Value, usize, usize)>,
    /// Range rules sorted by start (open starts first).
    spans: Vec<Span>,
    default: Option<usize>,
}

impl Mapping {
    /// Checks the rules and indexes them for lookup. Shard numbers are not
    /// checked against a shard count here; [`Mapping::check_shards`] does.
    pub fn new(rules: Vec<Rule>) -> Result<Mapping, MappingError> {
        let mut kind: Option<Kind> = None;
        let mut list = Vec::new();
        let mut spans = Vec::new();
        let mut default: Option<(usize, usize)> = None;

        for (index, rule) in rules.iter().enumerate() {
            for value in rule.values() {
                match kind {
                    None => kind = Some(value.kind()),
                    Some(expected) if expected != value.kind() => {
                        return Err(MappingError::MixedTypes {
                            rule: index,
                            expected,
                            found: value.kind(),
                        })
                    }
                    Some(_) => {}
                }
            }
            match rule {
                Rule::List { values, shard } => {
                    if values.is_empty() {
                        return Err(MappingError::EmptyList { rule: index });
                    }
                    list.extend(values.iter().map(|value| (value.clone(), *shard, index)));
                }
                Rule::Range { start, end, shard } => {
                    if let (Some(start), Some(end)) = (start, end) {
                        if start >= end {
                            return Err(MappingError::EmptyRange {
                                rule: index,
                                start: start.to_string(),
                                end: end.to_string(),
                            });
                        }
                    }
                    spans.push(Span {
                        start: start.clone(),
                        end: end.clone(),
                        shard: *shard,
                        rule: index,
                    });
                }
                Rule::Default { shard } => {
                    if let Some((first, _)) = default {
                        return Err(MappingError::DuplicateDefault {
                            first,
                            second: index,
                        });
                    }
                    default = Some((index, *shard));
                }
            }
        }

        list.sort_by(|a, b| a.0.cmp(&b.0).then(a.2.cmp(&b.2)));
        if let Some(pair) = list.windows(2).find(|pair| pair[0].0 == pair[1].0) {
            return Err(MappingError::DuplicateValue {
                value: pair[0].0.to_string(),
                first: pair[0].2,
                second: pair[1].2,
            });
        }

        // `None < Some`, so open starts sort first, as they should.
        spans.sort_by(|a, b| a.start.cmp(&b.start));
        for pair in spans.windows(2) {
            // Sorted by start and each non-empty, so only neighbours can
            // overlap: the earlier one must end at or before the next start.
            let disjoint = match (&pair[0].end, &pair[1].start) {
                (Some(end), Some(start)) => end <= start,
                _ => false,
            };
            if !disjoint {
                let (first, second) = (
                    pair[0].rule.min(pair[1].rule),
                    pair[0].rule.max(pair[1].rule),
                );
                return Err(MappingError::Overlap { first, second });
            }
        }

        let mapping = Mapping {
            rules,
            kind,
            list,
            spans,
            default: default.map(|(_, shard)| shard),
        };
        for (value, _, rule) in &mapping.list {
            if let Some(span) = mapping.span(value.as_value_ref()) {
                return Err(MappingError::ListInRange {
                    value: value.to_string(),
                    list: *rule,
                    range: span.rule,
                });
            }
        }
        Ok(mapping)
    }

    /// The rules as given.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The kind of the rules' values, `None` if only a default is given.
    pub fn kind(&self) -> Option<Kind> {
        self.kind
    }

    /// Checks that every rule names one of `shards` shards.
    pub fn check_shards(&self, shards: usize) -> Result<(), MappingError> {
        match self.rules.iter().position(|rule| rule.shard() >= shards) {
            Some(rule) => Err(MappingError::ShardOutOfRange {
                rule,
                shard: self.rules[rule].shard(),
                shards,
            }),
            None => Ok(()),
        }
    }

    /// The shard for a key, or `None` when no rule takes it and there is no
    /// default. A key of another kind than the rules' values (which a
    /// [`Sharder`](super::Sharder) never passes) matches only the default.
    pub fn shard(&self, value: Option<ValueRef<'_>>) -> Option<usize> {
        let Some(value) = value else {
            return self.default;
        };
        if self.kind != Some(value.kind()) {
            return self.default;
        }
        if let Ok(found) = self
            .list
            .binary_search_by(|(listed, _, _)| listed.as_value_ref().cmp(&value))
        {
            return Some(self.list[found].1);
        }
        self.span(value).map(|span| span.shard).or(self.default)
    }

    /// The range containing `value`: the last one starting at or before it,
    /// if it has not ended yet.
    fn span(&self, value: ValueRef<'_>) -> Option<&Span> {
        let after = self.spans.partition_point(|span| {
            span.start
                .as_ref()
                .is_none_or(|start| start.as_value_ref() <= value)
        });
        let candidate = self.spans.get(after.checked_sub(1)?)?;
        candidate.contains(value).then_some(candidate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int(value: i64) -> Value {
        Value::Int(value)
    }

    fn range(start: Option<i64>, end: Option<i64>, shard: usize) -> Rule {
        Rule::Range {
            start: start.map(Value::Int),
            end: end.map(Value::Int),
            shard,
        }
    }

    fn shard_of(mapping: &Mapping, value: i64) -> Option<usize> {
        mapping.shard(Some(ValueRef::Int(value)))
    }

    #[test]
    fn list_rules() {
        let mapping = Mapping::new(vec![
            Rule::List {
                values: vec![int(1), int(5), int(-3)],
                shard: 0,
            },
            Rule::List {
                values: vec![int(2)],
                shard: 1,
            },
        ])
        .unwrap();
        assert_eq!(shard_of(&mapping, 1), Some(0));
        assert_eq!(shard_of(&mapping, 5), Some(0));
        assert_eq!(shard_of(&mapping, -3), Some(0));
        assert_eq!(shard_of(&mapping, 2), Some(1));
        assert_eq!(shard_of(&mapping, 3), None);
        assert_eq!(mapping.shard(None), None);
    }

    #[test]
    fn text_list_rules() {
        let mapping = Mapping::new(vec![
            Rule::List {
                values: vec![Value::Text("eu".into()), Value::Text("uk".into())],
                shard: 0,
            },
            Rule::List {
                values: vec![Value::Text("us".into())],
                shard: 1,
            },
        ])
        .unwrap();
        assert_eq!(mapping.shard(Some(ValueRef::Text("uk"))), Some(0));
        assert_eq!(mapping.shard(Some(ValueRef::Text("us"))), Some(1));
        assert_eq!(mapping.shard(Some(ValueRef::Text("US"))), None);
        // Another kind never matches a list value.
        assert_eq!(mapping.shard(Some(ValueRef::Int(1))), None);
    }

    #[test]
    fn range_rules_with_open_ends() {
        let mapping = Mapping::new(vec![
            range(Some(100), Some(200), 1),
            range(None, Some(100), 0),
            range(Some(300), None, 2),
        ])
        .unwrap();
        assert_eq!(shard_of(&mapping, i64::MIN), Some(0));
        assert_eq!(shard_of(&mapping, 99), Some(0));
        assert_eq!(shard_of(&mapping, 100), Some(1));
        assert_eq!(shard_of(&mapping, 199), Some(1));
        assert_eq!(shard_of(&mapping, 200), None);
        assert_eq!(shard_of(&mapping, 299), None);
        assert_eq!(shard_of(&mapping, 300), Some(2));
        assert_eq!(shard_of(&mapping, i64::MAX), Some(2));
        assert_eq!(mapping.shard(None), None);
    }

    #[test]
    fn text_ranges_compare_bytewise() {
        let text = |s: &str| Some(Value::Text(s.into()));
        let mapping = Mapping::new(vec![
            Rule::Range {
                start: None,
                end: text("n"),
                shard: 0,
            },
            Rule::Range {
                start: text("n"),
                end: None,
                shard: 1,
            },
        ])
        .unwrap();
        assert_eq!(mapping.shard(Some(ValueRef::Text("apple"))), Some(0));
        assert_eq!(mapping.shard(Some(ValueRef::Text("n"))), Some(1));
        // Uppercase sorts before lowercase in the C collation.
        assert_eq!(mapping.shard(Some(ValueRef::Text("Zebra"))), Some(0));
        assert_eq!(mapping.shard(Some(ValueRef::Text("żółw"))), Some(1));
        assert_eq!(mapping.shard(Some(ValueRef::Text(""))), Some(0));
    }

    #[test]
    fn default_takes_the_rest_and_null() {
        let mapping = Mapping::new(vec![
            Rule::Default { shard: 3 },
            Rule::List {
                values: vec![int(7)],
                shard: 1,
            },
            range(Some(10), Some(20), 2),
        ])
        .unwrap();
        assert_eq!(shard_of(&mapping, 7), Some(1));
        assert_eq!(shard_of(&mapping, 15), Some(2));
        assert_eq!(shard_of(&mapping, 20), Some(3));
        assert_eq!(mapping.shard(None), Some(3));
        assert_eq!(mapping.shard(Some(ValueRef::Text("7"))), Some(3));

        let only_default = Mapping::new(vec![Rule::Default { shard: 0 }]).unwrap();
        assert_eq!(only_default.kind(), None);
        assert_eq!(shard_of(&only_default, 1), Some(0));
    }

    #[test]
    fn rejects_ambiguous_or_empty_rules() {
        let list = |values: Vec<i64>, shard| Rule::List {
            values: values.into_iter().map(Value::Int).collect(),
            shard,
        };
        let cases = [
            (vec![list(vec![], 0)], MappingError::EmptyList { rule: 0 }),
            (
                vec![
                    list(vec![1], 0),
                    Rule::List {
                        values: vec![Value::Text("1".into())],
                        shard: 1,
                    },
                ],
                MappingError::MixedTypes {
                    rule: 1,
                    expected: Kind::Integer,
                    found: Kind::Text,
                },
            ),
            (
                vec![range(Some(5), Some(5), 0)],
                MappingError::EmptyRange {
                    rule: 0,
                    start: "5".into(),
                    end: "5".into(),
                },
            ),
            (
                vec![range(Some(10), None, 1), range(None, Some(11), 0)],
                MappingError::Overlap {
                    first: 0,
                    second: 1,
                },
            ),
            (
                vec![range(Some(0), Some(10), 0), range(Some(5), Some(7), 1)],
                MappingError::Overlap {
                    first: 0,
                    second: 1,
                },
            ),
            (
                vec![range(None, None, 0), range(None, Some(1), 1)],
                MappingError::Overlap {
                    first: 0,
                    second: 1,
                },
            ),
            (
                vec![list(vec![1, 2], 0), list(vec![3, 2], 1)],
                MappingError::DuplicateValue {
                    value: "2".into(),
                    first: 0,
                    second: 1,
                },
            ),
            (
                vec![list(vec![4, 4], 0)],
                MappingError::DuplicateValue {
                    value: "4".into(),
                    first: 0,
                    second: 0,
                },
            ),
            (
                vec![range(Some(0), Some(10), 0), list(vec![10, 9], 1)],
                MappingError::ListInRange {
                    value: "9".into(),
                    list: 1,
                    range: 0,
                },
            ),
            (
                vec![Rule::Default { shard: 0 }, Rule::Default { shard: 1 }],
                MappingError::DuplicateDefault {
                    first: 0,
                    second: 1,
                },
            ),
        ];
        for (rules, expected) in cases {
            assert_eq!(Mapping::new(rules.clone()), Err(expected), "{rules:?}");
        }
        // Touching ranges are fine.
        Mapping::new(vec![range(None, Some(0), 0), range(Some(0), None, 1)]).unwrap();
    }

    #[test]
    fn shard_numbers_checked_against_count() {
        let mapping = Mapping::new(vec![range(None, Some(0), 0), range(Some(0), None, 3)]).unwrap();
        assert_eq!(mapping.check_shards(4), Ok(()));
        assert_eq!(
            mapping.check_shards(3),
            Err(MappingError::ShardOutOfRange {
                rule: 1,
                shard: 3,
                shards: 3,
            })
        );
    }
}
