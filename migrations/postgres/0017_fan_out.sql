-- Fan-out: a `for_each` step starts one child run per item. A child names its parent run, the
-- parent's step execution (`parent_seq`) and its item's position.
ALTER TABLE runs ADD COLUMN parent_run_id TEXT;
ALTER TABLE runs ADD COLUMN parent_seq BIGINT;
ALTER TABLE runs ADD COLUMN item_index BIGINT;
CREATE INDEX runs_by_parent ON runs (parent_run_id, parent_seq, item_index);

-- One row per fan-out (a parent's `for_each` step execution): children are admitted in item
-- order, at most `concurrency` active; `next_index` is the next one to admit and `remaining`
-- how many have not ended. The row is updated in the transaction that ends a child, which
-- admits the next one and, at zero, wakes the parent.
CREATE TABLE fan_outs (
    parent_run_id TEXT NOT NULL,
    parent_seq BIGINT NOT NULL,
    account_id TEXT NOT NULL,
    total BIGINT NOT NULL,
    next_index BIGINT NOT NULL,
    remaining BIGINT NOT NULL,
    PRIMARY KEY (parent_run_id, parent_seq)
);
