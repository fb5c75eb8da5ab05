"""Schema migrations: an ordered list of small functions, each recorded in `schema_migrations` when applied.

Never edit a released migration; append a new one. A store whose recorded version is newer than the
last migration here was written by a newer autointerp and is refused rather than misread.
"""

from __future__ import annotations

from collections.abc import Callable

import duckdb


def _m001_initial(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("""
        CREATE TABLE corpora (
            corpus_id INTEGER PRIMARY KEY,
            name VARCHAR NOT NULL,
            tokenizer VARCHAR NOT NULL,
            ctx_len INTEGER NOT NULL,
            n_contexts INTEGER NOT NULL,
            n_tokens BIGINT NOT NULL,
            fingerprint VARCHAR NOT NULL UNIQUE,
            source VARCHAR NOT NULL,
            created_at TIMESTAMP NOT NULL
        )""")
    # One row per context, in context_id order; token strings beside the ids so a store reads back
    # without a tokenizer. Joining the strings of a context gives its text.
    con.execute("""
        CREATE TABLE contexts (
            corpus_id INTEGER NOT NULL,
            context_id UINTEGER NOT NULL,
            token_ids INTEGER[] NOT NULL,
            tokens VARCHAR[] NOT NULL
        )""")
    con.execute("""
        CREATE TABLE dictionaries (
            dictionary_id INTEGER PRIMARY KEY,
            name VARCHAR NOT NULL UNIQUE,
            corpus_id INTEGER NOT NULL,
            model VARCHAR NOT NULL,
            hook VARCHAR NOT NULL,
            width UINTEGER NOT NULL,
            kind VARCHAR NOT NULL,
            source VARCHAR NOT NULL,
            config JSON NOT NULL,
            created_at TIMESTAMP NOT NULL
        )""")
    # Sparse activations, physically clustered by (dictionary_id, feature, context_id, position):
    # every ingest path appends one dictionary's rows in that order, so DuckDB's per-row-group
    # min/max (zonemaps) let a per-feature read skip all row groups but the feature's own, and a
    # feature range is one contiguous scan. No ART index: it would cost more than the table.
    con.execute("""
        CREATE TABLE activations (
            dictionary_id USMALLINT NOT NULL,
            feature UINTEGER NOT NULL,
            context_id UINTEGER NOT NULL,
            position USMALLINT NOT NULL,
            value FLOAT NOT NULL
        )""")
    # One row per feature 0..width-1, dead features included (n_firing = 0).
    con.execute("""
        CREATE TABLE feature_stats (
            dictionary_id USMALLINT NOT NULL,
            feature UINTEGER NOT NULL,
            n_firing BIGINT NOT NULL,
            n_contexts BIGINT NOT NULL,
            density DOUBLE NOT NULL,
            max_value FLOAT,
            mean_value DOUBLE,
            quantile_edges FLOAT[] NOT NULL,
            max_context UINTEGER,
            max_position USMALLINT
        )""")
    con.execute("""
        CREATE TABLE feature_neighbors (
            dictionary_id USMALLINT NOT NULL,
            feature UINTEGER NOT NULL,
            neighbor UINTEGER NOT NULL,
            similarity FLOAT NOT NULL
        )""")
    con.execute("""
        CREATE TABLE sampler_configs (
            config_hash VARCHAR PRIMARY KEY,
            config JSON NOT NULL
        )""")
    # Stored samples hold window references only; tokens and activations are read back on demand.
    con.execute("""
        CREATE TABLE samples (
            dictionary_id USMALLINT NOT NULL,
            feature UINTEGER NOT NULL,
            sample_set VARCHAR NOT NULL,
            kind VARCHAR NOT NULL,
            rank USMALLINT NOT NULL,
            context_id UINTEGER NOT NULL,
            start USMALLINT NOT NULL,
            length USMALLINT NOT NULL
        )""")
    con.execute("""
        CREATE TABLE sample_status (
            dictionary_id USMALLINT NOT NULL,
            feature UINTEGER NOT NULL,
            status VARCHAR NOT NULL,
            reason VARCHAR NOT NULL,
            n_candidates INTEGER NOT NULL,
            config_hash VARCHAR NOT NULL,
            seed BIGINT NOT NULL,
            created_at TIMESTAMP NOT NULL
        )""")


def _m002_labels(con: duckdb.DuckDBPyConnection) -> None:
    # One row per explanation (a feature may have several: other explainers, prompts, candidates).
    con.execute("""
        CREATE TABLE explanations (
            explanation_id BIGINT PRIMARY KEY,
            dictionary_id USMALLINT NOT NULL,
            feature UINTEGER NOT NULL,
            text VARCHAR NOT NULL,
            explainer VARCHAR NOT NULL,       -- a method ("offline") or a model ("anthropic:...")
            prompt_hash VARCHAR NOT NULL,     -- hash of the prompt template, or the method's version
            sampler_hash VARCHAR NOT NULL,
            sampler VARCHAR NOT NULL,         -- the sampler config, JSON
            seed BIGINT NOT NULL,
            evidence VARCHAR NOT NULL,        -- JSON: what the text was derived from
            created_at TIMESTAMP NOT NULL
        )""")
    con.execute("""
        CREATE TABLE scores (
            explanation_id BIGINT NOT NULL,
            scorer VARCHAR NOT NULL,
            scorer_version VARCHAR NOT NULL,  -- method version, or model + prompt hash
            status VARCHAR NOT NULL,          -- ok | undefined | failed
            value DOUBLE,                     -- NULL unless status = ok
            reason VARCHAR NOT NULL,
            details VARCHAR NOT NULL,         -- JSON
            created_at TIMESTAMP NOT NULL
        )""")
    # The outcome of labelling one feature under one (explainer, prompt, sampler, seed): a rerun skips
    # what is here with status ok or skipped, and retries what failed.
    con.execute("""
        CREATE TABLE label_status (
            dictionary_id USMALLINT NOT NULL,
            feature UINTEGER NOT NULL,
            explainer VARCHAR NOT NULL,
            prompt_hash VARCHAR NOT NULL,
            sampler_hash VARCHAR NOT NULL,
            seed BIGINT NOT NULL,
            status VARCHAR NOT NULL,          -- ok | skipped | failed
            reason VARCHAR NOT NULL,
            created_at TIMESTAMP NOT NULL
        )""")


def _m003_llm(con: duckdb.DuckDBPyConnection) -> None:
    # Every LLM response, keyed by a hash of all that changes the output: a rerun pays nothing. Rows
    # arrive through autointerp.llm.journal (a write-ahead file in front of these two tables), which
    # adds a key only once; no index, so a fold costs one anti-join rather than index maintenance.
    con.execute("""
        CREATE TABLE llm_cache (
            cache_key VARCHAR NOT NULL,       -- sha256 of provider, model, messages, sampling parameters
            provider VARCHAR NOT NULL,
            model VARCHAR NOT NULL,
            response VARCHAR NOT NULL,        -- JSON: texts, usage, stop reason (never the API key)
            created_at TIMESTAMP NOT NULL
        )""")
    # The cost ledger: one row per call made or served from the cache.
    con.execute("""
        CREATE TABLE llm_calls (
            call_id VARCHAR NOT NULL,         -- unique: a journal replayed twice adds no row twice
            run_id VARCHAR NOT NULL,
            cache_key VARCHAR NOT NULL,
            provider VARCHAR NOT NULL,
            model VARCHAR NOT NULL,
            purpose VARCHAR NOT NULL,         -- explain | simulate | ...
            cached BOOLEAN NOT NULL,          -- served from llm_cache: nothing paid
            status VARCHAR NOT NULL,          -- ok | error
            error VARCHAR NOT NULL,
            attempts INTEGER NOT NULL,
            input_tokens BIGINT NOT NULL,
            output_tokens BIGINT NOT NULL,
            cache_read_tokens BIGINT NOT NULL,
            cache_write_tokens BIGINT NOT NULL,
            cost_usd DOUBLE NOT NULL,
            latency_ms DOUBLE NOT NULL,
            created_at TIMESTAMP NOT NULL
        )""")
    # Batch jobs submitted to a provider's batch API: persisted right after submission, so a restarted
    # run polls and collects them instead of submitting (and paying for) the same requests again.
    con.execute("""
        CREATE TABLE llm_batches (
            batch_id VARCHAR NOT NULL,
            provider VARCHAR NOT NULL,
            model VARCHAR NOT NULL,
            purpose VARCHAR NOT NULL,
            run_id VARCHAR NOT NULL,
            status VARCHAR NOT NULL,          -- submitted | collected
            n_requests INTEGER NOT NULL,
            submitted_at TIMESTAMP NOT NULL,
            collected_at TIMESTAMP
        )""")
    con.execute("""
        CREATE TABLE llm_batch_items (
            batch_id VARCHAR NOT NULL,
            custom_id VARCHAR NOT NULL,
            cache_key VARCHAR NOT NULL
        )""")


def _m004_best_of(con: duckdb.DuckDBPyConnection) -> None:
    # Best-of-k: a feature's candidates are all kept, and one of them is its label (chosen). Earlier
    # stores kept every candidate as a label: their first candidate becomes the chosen one.
    con.execute("ALTER TABLE explanations ADD COLUMN chosen BOOLEAN DEFAULT true")
    con.execute("""
        UPDATE explanations e SET chosen = false
        WHERE explanation_id > (SELECT min(f.explanation_id) FROM explanations f
                                WHERE f.dictionary_id = e.dictionary_id AND f.feature = e.feature
                                  AND f.explainer = e.explainer AND f.prompt_hash = e.prompt_hash
                                  AND f.sampler_hash = e.sampler_hash AND f.seed = e.seed)""")


def _m005_jobs(con: duckdb.DuckDBPyConnection) -> None:
    # Incremental labelling: a fingerprint of each feature's activations, and the one each label was
    # made from (labels already there: the activations there now).
    con.execute("ALTER TABLE feature_stats ADD COLUMN act_hash UBIGINT")
    con.execute("ALTER TABLE label_status ADD COLUMN act_hash UBIGINT")
    for (did,) in con.execute("SELECT dictionary_id FROM dictionaries").fetchall():
        # the fingerprint as this migration defines it (its own SQL: a later writer never changes it)
        con.execute("""
            UPDATE feature_stats f SET act_hash = coalesce(h.x, 0)
            FROM (SELECT r.range AS feature, a.x FROM range((SELECT max(feature) + 1 FROM feature_stats
                                                              WHERE dictionary_id = $1)) r
                  LEFT JOIN (SELECT feature, bit_xor(hash(context_id, position, value)) AS x FROM activations
                             WHERE dictionary_id = $1 GROUP BY feature) a ON a.feature = r.range) h
            WHERE f.dictionary_id = $1 AND f.feature = h.feature""", [did])
    # the labels there were made from the activations there now: a later change makes them stale
    con.execute("UPDATE label_status l SET act_hash = f.act_hash FROM feature_stats f "
                "WHERE l.dictionary_id = f.dictionary_id AND l.feature = f.feature")
    # The job ledger: one row per `autointerp job run`, written at its start and at its end (a row
    # still "running" whose job lock is free was a crash).
    con.execute("""
        CREATE TABLE job_runs (
            run_id VARCHAR PRIMARY KEY,
            dictionary VARCHAR NOT NULL,
            config VARCHAR NOT NULL,          -- the job's TOML, as given
            config_hash VARCHAR NOT NULL,
            executor VARCHAR NOT NULL,        -- local | ray
            host VARCHAR NOT NULL,
            pid INTEGER NOT NULL,
            status VARCHAR NOT NULL,          -- running | done | budget | failed | crashed | error
            exit_code INTEGER,
            stop_reason VARCHAR NOT NULL,
            started_at TIMESTAMP NOT NULL,
            ended_at TIMESTAMP,
            features_done BIGINT NOT NULL DEFAULT 0,
            features_skipped BIGINT NOT NULL DEFAULT 0,
            features_failed BIGINT NOT NULL DEFAULT 0,
            already_done BIGINT NOT NULL DEFAULT 0,
            input_tokens BIGINT NOT NULL DEFAULT 0,
            output_tokens BIGINT NOT NULL DEFAULT 0,
            dollars DOUBLE NOT NULL DEFAULT 0,
            duration_s DOUBLE,
            summary VARCHAR NOT NULL DEFAULT '{}'  -- the run's summary, JSON
        )""")


def _m006_per_scorer(con: duckdb.DuckDBPyConnection) -> None:
    # Stored samples carry the fingerprint of the activations they were drawn from: a run reads a stored
    # sample only while it is current (samples stored before this have none, and are drawn again).
    con.execute("ALTER TABLE sample_status ADD COLUMN act_hash UBIGINT")
    # A call to a model with no price is "unpriced", not free. Earlier rows: a paid call (not cached, ok,
    # with tokens) that cost exactly 0 had no price.
    con.execute("ALTER TABLE llm_calls ADD COLUMN priced BOOLEAN DEFAULT true")
    con.execute("UPDATE llm_calls SET priced = false WHERE NOT cached AND status = 'ok' AND cost_usd = 0 "
                "AND input_tokens + output_tokens > 0")
    # The ledger counts labels graded (with scorers they lacked) apart from labels explained.
    for col in ("features_graded", "grades_failed", "unpriced_calls"):
        con.execute(f"ALTER TABLE job_runs ADD COLUMN {col} BIGINT NOT NULL DEFAULT 0")


def _m007_vectors(con: duckdb.DuckDBPyConnection) -> None:
    # The context encoding of a corpus (per-token vectors of the offline scorers' model), paid once per
    # store: float16 [n_tokens, dim], row-major, one row per context and encoding recipe.
    con.execute("""
        CREATE TABLE context_vectors (
            corpus_id INTEGER NOT NULL,
            context_id UINTEGER NOT NULL,
            encoding VARCHAR NOT NULL,
            vectors BLOB NOT NULL
        )""")
    # Label embeddings for search: float16 [dim], L2-normalised, one per explanation and encoding.
    con.execute("""
        CREATE TABLE label_vectors (
            explanation_id BIGINT NOT NULL,
            dictionary_id USMALLINT NOT NULL,
            feature UINTEGER NOT NULL,
            encoding VARCHAR NOT NULL,
            vector BLOB NOT NULL
        )""")
    # Labels made elsewhere (Neuronpedia, delphi, an export): where they came from.
    con.execute("ALTER TABLE explanations ADD COLUMN imported VARCHAR")


def _m008_intervals(con: duckdb.DuckDBPyConnection) -> None:
    # How sure each grade is: its 95% bootstrap interval and the evidence it rests on (held-out windows,
    # or intruder questions, and their tokens). Grades from before have none (NULL).
    for col, typ in (("ci_low", "DOUBLE"), ("ci_high", "DOUBLE"), ("n_windows", "INTEGER"), ("n_tokens", "INTEGER")):
        con.execute(f"ALTER TABLE scores ADD COLUMN {col} {typ}")


def _m009_outputs(con: duckdb.DuckDBPyConnection) -> None:
    # What each feature writes into the model (capture/lens.py): its output direction, float16 [dim] (an SAE's
    # decoder row, a neuron's column of the linear layer it feeds), for dictionaries captured with one.
    con.execute("""
        CREATE TABLE feature_directions (
            dictionary_id USMALLINT NOT NULL,
            feature UINTEGER NOT NULL,
            direction BLOB NOT NULL
        )""")
    # The logit lens of that direction: the tokens it promotes (highest logits first) and suppresses (lowest
    # first), ids beside their display strings, one row per feature.
    con.execute("""
        CREATE TABLE output_tokens (
            dictionary_id USMALLINT NOT NULL,
            feature UINTEGER NOT NULL,
            promoted_ids INTEGER[] NOT NULL,
            promoted VARCHAR[] NOT NULL,
            promoted_logits FLOAT[] NOT NULL,
            suppressed_ids INTEGER[] NOT NULL,
            suppressed VARCHAR[] NOT NULL,
            suppressed_logits FLOAT[] NOT NULL
        )""")


def _m010_matches(con: duckdb.DuckDBPyConnection) -> None:
    # Two dictionaries over the same corpus, paired (match/): for each feature of the later one (to) its
    # closest feature of the earlier one (from), by each method (coactivation: the correlation of their
    # activations over every token; decoder: the cosine of their output directions). One header row per
    # (from, to, method) with what the match was computed with.
    con.execute("""
        CREATE TABLE dictionary_matches (
            from_dictionary USMALLINT NOT NULL,
            to_dictionary USMALLINT NOT NULL,
            method VARCHAR NOT NULL,
            params JSON NOT NULL,
            n_pairs BIGINT NOT NULL,
            created_at TIMESTAMP NOT NULL
        )""")
    con.execute("""
        CREATE TABLE feature_matches (
            from_dictionary USMALLINT NOT NULL,
            to_dictionary USMALLINT NOT NULL,
            method VARCHAR NOT NULL,
            to_feature UINTEGER NOT NULL,
            from_feature UINTEGER NOT NULL,
            similarity FLOAT NOT NULL
        )""")
    # A label carried over from a matched feature of another dictionary ("carried from A#17, coactivation
    # 0.93"): it was regraded on this feature's own windows, never explained here.
    con.execute("ALTER TABLE explanations ADD COLUMN carried VARCHAR")


def _m011_run_ids(con: duckdb.DuckDBPyConnection) -> None:
    # Which run wrote each explanation and each grade (`label`'s run id, a job's run id): what `diff --runs`
    # compares. Rows written before this migration have none.
    con.execute("ALTER TABLE explanations ADD COLUMN run_id VARCHAR")
    con.execute("ALTER TABLE scores ADD COLUMN run_id VARCHAR")


def _m012_captures(con: duckdb.DuckDBPyConnection) -> None:
    # A live capture, committed every --checkpoint-tokens so the same command resumes it after a crash. Its
    # rows wait in one staging table per member (capture_<id>_<member>, made and dropped by the writer) and
    # become dictionaries, sorted by feature, when the last context is in. `fingerprint` is what a resume must
    # match (model, corpus, SAEs, hooks, threshold, ctx_len, max_tokens); `members` lists the dictionaries.
    con.execute("""
        CREATE TABLE captures (
            capture_id INTEGER PRIMARY KEY,
            fingerprint VARCHAR NOT NULL,
            corpus_id INTEGER NOT NULL,
            creates_corpus BOOLEAN NOT NULL,  -- this capture packs the corpus's contexts as it goes
            batch_contexts INTEGER NOT NULL,  -- contexts a forward pass: checkpoints fall on batch boundaries
            contexts_done BIGINT NOT NULL,
            nonzeros BIGINT NOT NULL,
            status VARCHAR NOT NULL,          -- running | done
            members JSON NOT NULL,            -- [{"name", "kind", "hook", "source", "width"}], in member order
            config JSON NOT NULL,
            created_at TIMESTAMP NOT NULL,
            updated_at TIMESTAMP NOT NULL
        )""")


Migration = tuple[int, str, Callable[[duckdb.DuckDBPyConnection], None]]

def _m013_label_changes(con: duckdb.DuckDBPyConnection) -> None:
    # What each commit did to labels and grades, in commit order, so a reader that holds a copy (the
    # browser's index, its search) reads again only what changed: the features a write touched (NULL: every
    # feature of the dictionary, after its activations were replaced). Rows older than a week are dropped.
    con.execute("""
        CREATE TABLE label_changes (
            seq BIGINT NOT NULL,
            dictionary_id USMALLINT NOT NULL,
            features UINTEGER[],
            written_at TIMESTAMP NOT NULL
        )""")


def _m014_calibration(con: duckdb.DuckDBPyConnection) -> None:
    # `autointerp calibrate`: one row per run (its summaries, JSON), and every grade it gave a candidate label
    # (the truth, a near miss, an unrelated rule's truth, an explainer's label) of a gold feature.
    con.execute("""
        CREATE TABLE calibration_runs (
            run_id VARCHAR PRIMARY KEY,
            dictionary_id USMALLINT NOT NULL,  -- the dictionary whose corpus the gold features were planted on
            gold_id USMALLINT NOT NULL,        -- the gold dictionary
            summary JSON NOT NULL,
            created_at TIMESTAMP NOT NULL
        )""")
    con.execute("""
        CREATE TABLE calibration_grades (
            run_id VARCHAR NOT NULL,
            rule VARCHAR NOT NULL,
            category VARCHAR NOT NULL,         -- word class | context | span | graded
            seed BIGINT NOT NULL,
            budget INTEGER,                    -- held-out windows judged (NULL: all)
            scorer VARCHAR NOT NULL,
            candidate VARCHAR NOT NULL,        -- truth | narrower | broader | sibling | unrelated | EXPLAINER@k
            text VARCHAR NOT NULL,
            status VARCHAR NOT NULL,
            value DOUBLE,
            low DOUBLE,
            high DOUBLE,
            n_windows INTEGER NOT NULL,
            reason VARCHAR NOT NULL            -- why undefined or failed ("reply: ...")
        )""")


def _m015_run_kinds(con: duckdb.DuckDBPyConnection) -> None:
    # `job_runs` holds every labelling run, not only jobs: `kind` says which (job | label), so `job list`
    # shows a plain `label` run (its id, counts) beside the jobs; `features_carried` the features that kept a
    # label carried from a matched dictionary (so a carry run's counts add up).
    con.execute("ALTER TABLE job_runs ADD COLUMN kind VARCHAR NOT NULL DEFAULT 'job'")
    con.execute("ALTER TABLE job_runs ADD COLUMN features_carried BIGINT NOT NULL DEFAULT 0")


MIGRATIONS: list[Migration] = [
    (1, "initial", _m001_initial),
    (2, "labels", _m002_labels),
    (3, "llm cache and ledger", _m003_llm),
    (4, "best-of-k: the chosen candidate", _m004_best_of),
    (5, "incremental jobs: activation fingerprints, job ledger", _m005_jobs),
    (6, "grades per scorer: sample fingerprints, unpriced calls, graded counts", _m006_per_scorer),
    (7, "stored context encodings, label vectors, imported labels", _m007_vectors),
    (8, "grade intervals and evidence counts", _m008_intervals),
    (9, "output directions and their logit lens", _m009_outputs),
    (10, "dictionary matches, carried labels", _m010_matches),
    (11, "the run that wrote each label and grade", _m011_run_ids),
    (12, "resumable captures", _m012_captures),
    (13, "label changes, for readers beside a writer", _m013_label_changes),
    (14, "calibration runs and their grades", _m014_calibration),
    (15, "plain label runs in the run ledger, carried counts", _m015_run_kinds),
]

LATEST_VERSION = MIGRATIONS[-1][0]
