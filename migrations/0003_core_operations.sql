-- The built-in app and its operations. Direct INSERTs (not define_operation):
-- migrations run before the functions of sql/ are (re)loaded; the table
-- constraints are the rules either way.
-- depends: 0002_core_tables

INSERT INTO ledger.apps (app, description) VALUES ('core', 'Built-in operations usable by every app');

INSERT INTO ledger.operations
    (app, operation, direction, default_amount, min_amount, max_amount, caller_sets_amount, limit_per, is_system, description)
VALUES
    ('core', 'SIGNUP_CREDIT', 'credit', 3, 1, 3, false, 'ever', false, 'Credits granted once when a user signs up'),
    ('core', 'DAILY_REWARD',  'credit', 1, 1, 1, false, 'day',  false, 'Daily reward, once per owner per UTC day'),
    ('core', 'CREDIT_ADD',    'credit', 10, 1, 1000000, true, NULL, false, 'Credits added (e.g. a purchase); the caller may set the amount'),
    ('core', 'CREDIT_SPEND',  'debit',  1, 1, 1000000, true, NULL, false, 'Credits spent; the caller may set the amount'),
    ('core', 'TRANSFER_OUT',  'debit',  NULL, 1, NULL, true, NULL, true, 'Sending leg of ledger.transfer()'),
    ('core', 'TRANSFER_IN',   'credit', NULL, 1, NULL, true, NULL, true, 'Receiving leg of ledger.transfer()'),
    ('core', 'REVERSAL',      NULL,     NULL, 1, NULL, true, NULL, true, 'Compensating entry written by ledger.reverse_entry()');
