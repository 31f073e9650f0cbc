-- The example content app registers its own operations, as any app of the
-- monorepo does: a migration of its own, no change to core code.
-- depends: 0003_core_operations

INSERT INTO ledger.apps (app, description) VALUES ('example_app', 'Example content app');

INSERT INTO ledger.operations
    (app, operation, direction, default_amount, min_amount, max_amount, caller_sets_amount, limit_per, description)
VALUES
    ('example_app', 'CONTENT_CREATION', 'debit', 5, 1, 5, false, NULL, 'Creating a piece of content'),
    ('example_app', 'CONTENT_ACCESS',   'debit', 1, 1, 1, false, NULL, 'Accessing a piece of content');
