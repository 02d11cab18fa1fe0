//! Batch's list queries: `$filter` (parsed by [`berth_proto::odata`] against the list's
//! properties), `$select` (top-level properties), `maxresults` (1 to 1000, default 1000)
//! and paging by `odata.nextLink`, whose `$skiptoken` is an opaque continuation.
//!
//! A continuation names the last item answered (its place in the list's order and its
//! id): the next page starts after that item, or, if it was deleted in between, after its
//! place. Short lists are read whole and filtered here ([`ListQuery::page`]); a job's
//! tasks are read from the store a slice at a time ([`ListQuery::page_from`]).

use super::entity::base_url;
use super::ApiError;
use axum::http::HeaderMap;
use base64::Engine as _;
use berth_proto::odata::{Filter, Schema};
use serde_json::{Map, Value};

/// Batch's largest (and default) page.
pub const MAX_RESULTS: usize = 1000;

const SKIP_TOKEN: &str = "$skiptoken";

/// Where the previous page ended.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cursor {
    order: i64,
    id: String,
}

impl Cursor {
    fn encode(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(format!("{}:{}", self.order, self.id))
    }

    fn decode(token: &str) -> Option<Cursor> {
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (order, id) = text.split_once(':')?;
        Some(Cursor {
            order: order.parse().ok()?,
            id: id.to_string(),
        })
    }
}

/// A list request's query, checked.
#[derive(Debug)]
pub struct ListQuery {
    filter: Option<Filter>,
    select: Option<Vec<String>>,
    max: usize,
    after: Option<Cursor>,
    /// The query as given, less the continuation: the next page's link repeats it.
    pairs: Vec<(String, String)>,
}

fn invalid(name: &str, why: impl std::fmt::Display) -> ApiError {
    ApiError::InvalidQueryParameterValue(format!("{name}: {why}"))
}

/// The top-level properties `$select` names (`id,state`); refused when empty or not
/// plain names.
pub fn parse_select(v: &str) -> Result<Vec<String>, ApiError> {
    let names: Vec<String> = v.split(',').map(|s| s.trim().to_string()).collect();
    for n in &names {
        if n.is_empty()
            || !n
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        {
            return Err(invalid(
                "$select",
                format!("{n:?} is not a property name; give top-level properties separated by commas (id,state)"),
            ));
        }
    }
    Ok(names)
}

/// Keeps only the `names` of `entity`'s top-level properties (matched without regard to
/// case).
pub fn select(entity: Value, names: &[String]) -> Value {
    match entity {
        Value::Object(o) => Value::Object(
            o.into_iter()
                .filter(|(k, _)| names.iter().any(|n| n.eq_ignore_ascii_case(k)))
                .collect::<Map<_, _>>(),
        ),
        v => v,
    }
}

/// Entities already in their list's order, each `(id, its path, view)`, answered as Batch
/// answers a list: `$filter` against `schema`, `$select`, `maxresults` and
/// `odata.nextLink`, each entity with its `url`, `eTag` and `lastModified`. For the short
/// lists (pools, nodes) of the agent and the service alike.
pub fn of_views<T: serde::Serialize>(
    views: Vec<(String, String, T)>,
    pairs: Vec<(String, String)>,
    h: &HeaderMap,
    schema: &Schema,
    (path, metadata): (&str, &str),
) -> Result<Value, ApiError> {
    let q = ListQuery::parse(pairs, schema)?;
    let base = base_url(h);
    let items = views
        .into_iter()
        .enumerate()
        .map(|(i, (id, at, view))| {
            let order = i64::try_from(i).unwrap_or(i64::MAX);
            Ok((order, id, super::entity::item(&view, &base, &at)?))
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(q.page(items, h, path, metadata))
}

impl ListQuery {
    /// Reads `$filter` (against `schema`), `$select`, `maxresults` and `$skiptoken` from
    /// `pairs`; others (`api-version`, `timeout`, `$expand`) are kept for the next link.
    pub fn parse(pairs: Vec<(String, String)>, schema: &Schema) -> Result<ListQuery, ApiError> {
        let mut q = ListQuery {
            filter: None,
            select: None,
            max: MAX_RESULTS,
            after: None,
            pairs: vec![],
        };
        for (k, v) in pairs {
            match k.as_str() {
                "$filter" if !v.trim().is_empty() => {
                    q.filter = Some(schema.parse(&v).map_err(|e| {
                        invalid("$filter", e.to_string().trim_start_matches("$filter: "))
                    })?);
                }
                "$select" => q.select = Some(parse_select(&v)?),
                "maxresults" => {
                    q.max = v
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=MAX_RESULTS).contains(n))
                        .ok_or_else(|| {
                            invalid(
                                "maxresults",
                                format!("{v:?} is not a number from 1 to {MAX_RESULTS}"),
                            )
                        })?;
                }
                SKIP_TOKEN => {
                    q.after = Some(Cursor::decode(&v).ok_or_else(|| {
                        invalid(
                            SKIP_TOKEN,
                            "not a continuation this agent gave (take odata.nextLink as it is)",
                        )
                    })?);
                    continue;
                }
                _ => {}
            }
            q.pairs.push((k, v));
        }
        Ok(q)
    }

    /// One page of `items` (in the list's order: `(order, id, decorated entity)`) as
    /// Batch's list body: `odata.metadata`, `value`, and `odata.nextLink` when more match.
    pub fn page(
        &self,
        items: Vec<(i64, String, Value)>,
        h: &HeaderMap,
        path: &str,
        metadata: &str,
    ) -> Value {
        let matching: Vec<_> = items
            .into_iter()
            .filter(|(_, _, e)| self.matches(e))
            .collect();
        // After the last item answered; if it is gone, after its place in the order.
        let start = self.after.as_ref().map_or(0, |c| {
            matching
                .iter()
                .position(|(_, id, _)| id.eq_ignore_ascii_case(&c.id))
                .map(|i| i + 1)
                .unwrap_or_else(|| {
                    matching
                        .iter()
                        .position(|(o, _, _)| *o > c.order)
                        .unwrap_or(matching.len())
                })
        });
        let mut rest: Vec<_> = matching.into_iter().skip(start).collect();
        let more = rest.len() > self.max;
        rest.truncate(self.max);
        self.body(rest, more, h, path, metadata)
    }

    /// The same page as [`ListQuery::page`], read from a store a slice at a time, so that
    /// a page of a long list reads about its own items, not the list:
    /// - `find(id)`: the item of that id (`(order, id, entity)`), where the previous page
    ///   ended;
    /// - `read(after, n)`: up to `n` items whose order is above `after`, in order; they
    ///   may include items the filter refuses (it is applied here), never leave out one
    ///   it passes.
    ///
    /// A store read asynchronously drives a [`Pager`] itself, as this does.
    pub fn page_from<E>(
        &self,
        find: impl FnOnce(&str) -> Result<Option<(i64, String, Value)>, E>,
        mut read: impl FnMut(i64, usize) -> Result<Vec<(i64, String, Value)>, E>,
        (h, path, metadata): (&HeaderMap, &str, &str),
    ) -> Result<Value, E> {
        let found = match self.resume_id() {
            Some(id) => find(id)?,
            None => None,
        };
        let mut pager = self.pager(found);
        while let Some((after, n)) = pager.want() {
            pager.take(read(after, n)?);
        }
        Ok(pager.body(h, path, metadata))
    }

    /// The id of the item the previous page ended with, which [`ListQuery::pager`] wants
    /// looked up (`None`: a first page).
    pub fn resume_id(&self) -> Option<&str> {
        self.after.as_ref().map(|c| c.id.as_str())
    }

    /// A page read a slice at a time; `found`: the item of [`ListQuery::resume_id`], if
    /// it is still there.
    pub fn pager(&self, found: Option<(i64, String, Value)>) -> Pager<'_> {
        // As `page` resumes: after the item answered last if it still passes, else after
        // its place in the order.
        let after = match &self.after {
            None => i64::MIN,
            Some(c) => match found {
                Some((order, _, e)) if self.matches(&e) => order,
                _ => c.order,
            },
        };
        Pager {
            q: self,
            after,
            // One more than a page tells whether another follows.
            n: self.max + 1,
            rest: vec![],
            done: false,
        }
    }

    /// The value the filter requires of `prop` (see [`Filter::required_eq`]), for a store
    /// to read only the items that can pass.
    pub fn required_eq(&self, prop: &str) -> Option<String> {
        self.filter.as_ref()?.required_eq(prop)
    }

    fn matches(&self, e: &Value) -> bool {
        self.filter.as_ref().is_none_or(|f| f.matches(e))
    }

    /// The list body of `rest` (a page, in order); `more`: items follow it.
    fn body(
        &self,
        rest: Vec<(i64, String, Value)>,
        more: bool,
        h: &HeaderMap,
        path: &str,
        metadata: &str,
    ) -> Value {
        let base = base_url(h);
        let next = more.then(|| {
            let (order, id, _) = rest.last().expect("a full page");
            let cursor = Cursor {
                order: *order,
                id: id.clone(),
            };
            let mut query: Vec<String> = self
                .pairs
                .iter()
                .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
                .collect();
            query.push(format!("{SKIP_TOKEN}={}", cursor.encode()));
            format!("{base}{path}?{}", query.join("&"))
        });
        let value: Vec<Value> = rest
            .into_iter()
            .map(|(_, _, e)| match &self.select {
                Some(names) => select(e, names),
                None => e,
            })
            .collect();
        let mut body = Map::new();
        body.insert(
            "odata.metadata".into(),
            Value::String(format!("{base}/$metadata#{metadata}")),
        );
        body.insert("value".into(), Value::Array(value));
        if let Some(n) = next {
            body.insert("odata.nextLink".into(), Value::String(n));
        }
        Value::Object(body)
    }
}

/// One page being read a slice at a time ([`ListQuery::pager`]): ask [`Pager::want`]
/// for the next slice, give what was read to [`Pager::take`], then make the
/// [`Pager::body`].
pub struct Pager<'q> {
    q: &'q ListQuery,
    after: i64,
    n: usize,
    rest: Vec<(i64, String, Value)>,
    done: bool,
}

impl Pager<'_> {
    /// The next slice to read: up to `n` items of order above `after`; `None` once the
    /// page is known.
    pub fn want(&self) -> Option<(i64, usize)> {
        (!self.done && self.rest.len() <= self.q.max).then_some((self.after, self.n))
    }

    /// The items read for the slice [`Pager::want`] asked for, in order.
    pub fn take(&mut self, got: Vec<(i64, String, Value)>) {
        let Some((last, _, _)) = got.last() else {
            self.done = true;
            return;
        };
        self.after = *last;
        self.done = got.len() < self.n;
        let q = self.q;
        self.rest
            .extend(got.into_iter().filter(|(_, _, e)| q.matches(e)));
        // Slices grow when the filter refuses much.
        self.n = (self.n * 2).min(4 * MAX_RESULTS);
    }

    /// The list body of the page read.
    pub fn body(mut self, h: &HeaderMap, path: &str, metadata: &str) -> Value {
        let more = self.rest.len() > self.q.max;
        self.rest.truncate(self.q.max);
        self.q.body(self.rest, more, h, path, metadata)
    }
}

/// A query component, percent-encoded (unreserved characters and `$` kept).
fn enc(s: &str) -> String {
    use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
    const KEEP: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~')
        .remove(b'$');
    utf8_percent_encode(s, KEEP).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::odata::TASKS;
    use serde_json::json;

    fn items(n: i64) -> Vec<(i64, String, Value)> {
        (1..=n)
            .map(|i| {
                let id = format!("t{i}");
                let state = if i % 2 == 0 { "completed" } else { "active" };
                (i * 10, id.clone(), json!({"id": id, "state": state}))
            })
            .collect()
    }

    fn q(pairs: &[(&str, &str)]) -> Result<ListQuery, ApiError> {
        ListQuery::parse(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            &TASKS,
        )
    }

    fn ids(body: &Value) -> Vec<&str> {
        body["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap())
            .collect()
    }

    /// The query of a next link, as the client sends it back.
    fn follow(body: &Value) -> Vec<(String, String)> {
        let link = body["odata.nextLink"].as_str().unwrap();
        let (head, query) = link.split_once('?').unwrap();
        assert_eq!(head, "http://berth/jobs/j/tasks");
        query
            .split('&')
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                let dec = |s: &str| {
                    percent_encoding::percent_decode_str(s)
                        .decode_utf8()
                        .unwrap()
                        .into_owned()
                };
                (dec(k), dec(v))
            })
            .collect()
    }

    #[test]
    fn pages_follow_the_next_link_to_the_end() {
        let h = HeaderMap::new();
        let first = q(&[
            ("api-version", "2024-07-01.20.0"),
            ("$filter", "state eq 'active'"),
            ("maxresults", "2"),
        ])
        .unwrap();
        let body = first.page(items(9), &h, "/jobs/j/tasks", "tasks");
        assert_eq!(body["odata.metadata"], "http://berth/$metadata#tasks");
        assert_eq!(ids(&body), ["t1", "t3"]);
        let mut seen = ids(&body).iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut next = follow(&body);
        assert!(
            next.contains(&("api-version".into(), "2024-07-01.20.0".into())),
            "{next:?}"
        );
        loop {
            let page = ListQuery::parse(next, &TASKS).unwrap().page(
                items(9),
                &h,
                "/jobs/j/tasks",
                "tasks",
            );
            seen.extend(ids(&page).iter().map(|s| s.to_string()));
            if page.get("odata.nextLink").is_none() {
                break;
            }
            next = follow(&page);
        }
        assert_eq!(seen, ["t1", "t3", "t5", "t7", "t9"]);
    }

    /// `page_from` over slices of `list` answers as `page` over all of it; returns the
    /// number of items it read.
    fn same_page(query: &ListQuery, list: &[(i64, String, Value)]) -> usize {
        let h = HeaderMap::new();
        let whole = query.page(list.to_vec(), &h, "/jobs/j/tasks", "tasks");
        let read = std::cell::Cell::new(0);
        let sliced = query
            .page_from::<()>(
                |id| {
                    Ok(list
                        .iter()
                        .find(|(_, i, _)| i.eq_ignore_ascii_case(id))
                        .cloned())
                },
                |after, n| {
                    let got: Vec<_> = list
                        .iter()
                        .filter(|(o, _, _)| *o > after)
                        .take(n)
                        .cloned()
                        .collect();
                    read.set(read.get() + got.len());
                    Ok(got)
                },
                (&h, "/jobs/j/tasks", "tasks"),
            )
            .unwrap();
        assert_eq!(sliced, whole, "{query:?}");
        read.get()
    }

    #[test]
    fn slices_answer_as_the_whole_list() {
        let all = items(50);
        for filter in [
            None,
            Some("state eq 'active'"),
            Some("id eq 't49'"),
            Some("state eq 'running'"),
        ] {
            for max in ["1", "3", "7", "1000"] {
                let mut pairs = vec![("maxresults", max)];
                if let Some(f) = filter {
                    pairs.push(("$filter", f));
                }
                let mut query = q(&pairs).unwrap();
                // Every page to the end, the list changing in between: the item that
                // ended a page deleted, or no longer passing the filter.
                for round in 0.. {
                    let mut list = all.clone();
                    if round % 2 == 1 {
                        list.retain(|(o, _, _)| query.after.as_ref().is_none_or(|c| *o != c.order));
                    } else if let Some(c) = &query.after {
                        for it in list.iter_mut().filter(|(o, _, _)| *o == c.order) {
                            it.2["state"] = json!("running");
                        }
                    }
                    same_page(&query, &list);
                    let body = query.page(list, &HeaderMap::new(), "/jobs/j/tasks", "tasks");
                    if body.get("odata.nextLink").is_none() {
                        break;
                    }
                    query = ListQuery::parse(follow(&body), &TASKS).unwrap();
                }
            }
        }
        // A first page of an unfiltered list reads one item past the page, no more.
        assert_eq!(same_page(&q(&[("maxresults", "3")]).unwrap(), &all), 4);
    }

    #[test]
    fn a_deleted_last_item_resumes_at_its_place() {
        let h = HeaderMap::new();
        let body = q(&[("maxresults", "3")])
            .unwrap()
            .page(items(6), &h, "/jobs/j/tasks", "tasks");
        assert_eq!(ids(&body), ["t1", "t2", "t3"]);
        let mut left = items(6);
        left.remove(2); // t3 goes
        let page = ListQuery::parse(follow(&body), &TASKS).unwrap().page(
            left,
            &h,
            "/jobs/j/tasks",
            "tasks",
        );
        assert_eq!(ids(&page), ["t4", "t5", "t6"]);
        assert!(page.get("odata.nextLink").is_none());
    }

    #[test]
    fn select_keeps_the_properties_named() {
        let body = q(&[("$select", "id, State")]).unwrap().page(
            vec![(
                1,
                "a".into(),
                json!({"id": "a", "state": "active", "url": "u"}),
            )],
            &HeaderMap::new(),
            "/jobs/j/tasks",
            "tasks",
        );
        assert_eq!(body["value"][0], json!({"id": "a", "state": "active"}));
    }

    #[test]
    fn bad_queries_are_refused_by_name() {
        let cases = [
            (
                ("maxresults", "0"),
                "maxresults: \"0\" is not a number from 1 to 1000",
            ),
            (("maxresults", "1001"), "maxresults"),
            (("$skiptoken", "!!"), "$skiptoken: not a continuation"),
            (("$select", "id,,state"), "$select"),
            (
                ("$filter", "nope eq 1"),
                "$filter: unknown property 'nope' for tasks",
            ),
            (
                ("$filter", "state eq"),
                "$filter: at position 8: expected a property or a value",
            ),
        ];
        for ((k, v), msg) in cases {
            let e = q(&[(k, v)]).unwrap_err();
            assert_eq!(e.code(), "InvalidQueryParameterValue");
            assert!(e.message().starts_with(msg), "{k}={v}: {e}");
        }
    }
}
