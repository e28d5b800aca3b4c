-- The app tables notification jobs point at. An app that already has them keeps its own
-- definitions untouched: notifier reads optional columns (timezone, preference_token,
-- is_active, a group's name) only when present, through to_jsonb(row).
-- Tables created here get row-level security with owner-only policies, like every table.

do $$
begin
  if to_regclass('public.recipients') is null then
    create table public.recipients (
      id uuid primary key default gen_random_uuid(),
      parent_id uuid not null,             -- the owner: auth.uid() of the app user
      name text not null,
      email text,
      phone text,                          -- E.164, e.g. +15551234567
      preference_token text unique default replace(gen_random_uuid()::text, '-', ''),
      timezone text default 'UTC',
      is_active boolean not null default true,
      created_at timestamptz not null default now()
    );
    alter table public.recipients enable row level security;
    create policy recipients_owner_all on public.recipients for all to authenticated
      using (parent_id = (select auth.uid())) with check (parent_id = (select auth.uid()));
    create index recipients_parent_id_idx on public.recipients (parent_id); -- the RLS predicate
  end if;

  if to_regclass('public.recipient_groups') is null then
    create table public.recipient_groups (
      id uuid primary key default gen_random_uuid(),
      parent_id uuid not null,
      name text not null,
      created_at timestamptz not null default now()
    );
    alter table public.recipient_groups enable row level security;
    create policy recipient_groups_owner_all on public.recipient_groups for all to authenticated
      using (parent_id = (select auth.uid())) with check (parent_id = (select auth.uid()));
  end if;

  if to_regclass('public.memories') is null then
    create table public.memories (
      id uuid primary key default gen_random_uuid(),
      group_id uuid references public.recipient_groups (id) on delete cascade,
      title text,
      created_at timestamptz not null default now()
    );
    alter table public.memories enable row level security;
    create policy memories_owner_all on public.memories for all to authenticated
      using (exists (select 1 from public.recipient_groups g
                     where g.id = group_id and g.parent_id = (select auth.uid())))
      with check (exists (select 1 from public.recipient_groups g
                          where g.id = group_id and g.parent_id = (select auth.uid())));
  end if;
end
$$;
