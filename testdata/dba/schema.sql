-- The database the README's "For DBAs" SQL starts from: the application's
-- tables, owned by the application's role. dba_test.go replaces app_owner
-- (and the README's other names) with names of the test's own.
CREATE ROLE app_owner;
CREATE TABLE public.customers (id bigint PRIMARY KEY, email text NOT NULL);
CREATE TABLE public.orders (
    id bigint PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES public.customers,
    total numeric(10,2) NOT NULL,
    note text
);
ALTER TABLE public.customers OWNER TO app_owner;
ALTER TABLE public.orders OWNER TO app_owner;
