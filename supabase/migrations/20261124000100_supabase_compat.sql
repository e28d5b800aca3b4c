-- Supabase compatibility on plain PostgreSQL.
-- On Supabase the roles anon / authenticated / service_role and auth.uid(), auth.role(),
-- auth.jwt() already exist and nothing here redefines them. On a plain PostgreSQL server they are
-- created the way Supabase defines them (claims read from request.jwt.claims), so the row-level
-- security below behaves, and can be tested, exactly as on Supabase.

do $$
begin
  if not exists (select 1 from pg_roles where rolname = 'anon') then
    create role anon nologin noinherit;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'authenticated') then
    create role authenticated nologin noinherit;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'service_role') then
    create role service_role nologin noinherit bypassrls;
  end if;
end
$$;

create schema if not exists auth;

do $$
begin
  if to_regprocedure('auth.uid()') is null then
    create function auth.uid() returns uuid language sql stable as $f$
      select coalesce(
        nullif(current_setting('request.jwt.claim.sub', true), ''),
        (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
      )::uuid
    $f$;
  end if;
  if to_regprocedure('auth.role()') is null then
    create function auth.role() returns text language sql stable as $f$
      select coalesce(
        nullif(current_setting('request.jwt.claim.role', true), ''),
        (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
      )::text
    $f$;
  end if;
  if to_regprocedure('auth.jwt()') is null then
    create function auth.jwt() returns jsonb language sql stable as $f$
      select coalesce(
        nullif(current_setting('request.jwt.claim', true), ''),
        nullif(current_setting('request.jwt.claims', true), '')
      )::jsonb
    $f$;
  end if;
end
$$;

-- Grants only where this migration created the schema's functions (on Supabase they exist,
-- belong to supabase_auth_admin and are already granted).
do $$
begin
  if not exists (select 1 from pg_namespace n join pg_roles r on r.oid = n.nspowner
                  where n.nspname = 'auth' and r.rolname = 'supabase_auth_admin') then
    grant usage on schema auth to anon, authenticated, service_role;
    grant execute on function auth.uid(), auth.role(), auth.jwt() to anon, authenticated, service_role;
    grant usage on schema public to anon, authenticated, service_role;
  end if;
end
$$;
