//! `#[nucleotide(kind = …)]`: names a type's kind, checks that it implements that kind's
//! trait, and registers it under its class name.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::parse::Parser;
use syn::spanned::Spanned;
use syn::{GenericParam, Ident, Item, LitStr};

/// The kinds, as the attribute writes them.
const KINDS: [&str; 12] = [
    "ModelPlugin",
    "ModelLoss",
    "ModelPostProcessor",
    "ModelSummary",
    "ModelMetric",
    "Dataset",
    "DataFeeder",
    "DataReader",
    "DataProcessor",
    "CoordinatorCallback",
    "KpiPlugin",
    "KpiAccumulator",
];

const ATTRIBUTES: &str = "`kind`, `name`, `docs`";

struct Args {
    kind: Ident,
    name: Option<LitStr>,
    docs: Option<LitStr>,
}

fn parse_args(args: TokenStream) -> syn::Result<Args> {
    let mut kind: Option<Ident> = None;
    let mut name: Option<LitStr> = None;
    let mut docs: Option<LitStr> = None;
    let mut errors: Option<syn::Error> = None;
    let mut push = |e: syn::Error| match &mut errors {
        Some(all) => all.combine(e),
        None => errors = Some(e),
    };
    let parser = syn::meta::parser(|meta| {
        let twice = |what: &str| {
            syn::Error::new(
                meta.path.span(),
                format!("conflicting attributes: `{what}` is given twice; keep one"),
            )
        };
        if meta.path.is_ident("kind") {
            let value: Ident = meta.value()?.parse()?;
            if kind.is_some() {
                return Err(twice("kind"));
            }
            if !KINDS.contains(&value.to_string().as_str()) {
                let hint = closest(&value.to_string())
                    .map(|c| format!("did you mean `{c}`? "))
                    .unwrap_or_default();
                return Err(syn::Error::new(
                    value.span(),
                    format!(
                        "unknown nucleotide kind `{value}`, {hint}expected one of {}",
                        KINDS.map(|k| format!("`{k}`")).join(", ")
                    ),
                ));
            }
            kind = Some(value);
        } else if meta.path.is_ident("name") {
            let value: LitStr = meta.value()?.parse()?;
            if name.is_some() {
                return Err(twice("name"));
            }
            if value.value().is_empty() || value.value().contains(char::is_whitespace) {
                return Err(syn::Error::new(
                    value.span(),
                    "a class name cannot be empty or contain spaces",
                ));
            }
            name = Some(value);
        } else if meta.path.is_ident("docs") {
            let value: LitStr = meta.value()?.parse()?;
            if docs.is_some() {
                return Err(twice("docs"));
            }
            docs = Some(value);
        } else {
            let given = meta
                .path
                .get_ident()
                .map_or_else(|| "?".to_owned(), Ident::to_string);
            return Err(syn::Error::new(
                meta.path.span(),
                format!("unknown nucleotide attribute `{given}`, expected one of {ATTRIBUTES}"),
            ));
        }
        Ok(())
    });
    if let Err(e) = parser.parse2(args) {
        push(e);
    }
    if let Some(e) = errors {
        return Err(e);
    }
    let kind = kind.ok_or_else(|| {
        syn::Error::new(
            Span::call_site(),
            format!(
                "missing nucleotide kind: write `#[nucleotide(kind = ModelPlugin)]` with one of {}",
                KINDS.map(|k| format!("`{k}`")).join(", ")
            ),
        )
    })?;
    Ok(Args { kind, name, docs })
}

/// The closest kind name within a third of its length.
fn closest(given: &str) -> Option<&'static str> {
    KINDS
        .iter()
        .map(|k| (distance(&given.to_lowercase(), &k.to_lowercase()), *k))
        .filter(|(d, k)| *d <= (k.len() / 3).max(1))
        .min()
        .map(|(_, k)| k)
}

fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if ca == *cb {
                diagonal
            } else {
                1 + diagonal.min(above).min(row[j])
            };
            diagonal = above;
        }
    }
    row[b.len()]
}

pub fn expand(args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let parsed_item: Item = syn::parse2(item.clone())?;
    let (ident, generics, attrs) = match &parsed_item {
        Item::Struct(s) => (&s.ident, &s.generics, &s.attrs),
        Item::Enum(e) => (&e.ident, &e.generics, &e.attrs),
        other => {
            return Err(syn::Error::new(
                item_keyword_span(other),
                "`#[nucleotide]` goes on a struct or an enum: the type that holds the nucleotide's state",
            ));
        }
    };
    let args = parse_args(args)?;
    let backend = crate::keys::single_type_param(generics, "a nucleotide takes")?;

    let class_name = args
        .name
        .as_ref()
        .map_or_else(|| ident.to_string(), LitStr::value);
    let docs = args
        .docs
        .as_ref()
        .map_or_else(|| crate::keys::doc_text(attrs), LitStr::value);
    let kind = &args.kind;
    let p = quote!(::nc7_core::__private);

    let (impl_generics, ty_generics, where_clause) = generics.split_for_impl();
    // The type on the embedded default backend, for registration (which is not generic).
    let concrete = match &backend {
        Some(b) => {
            let args = generics.params.iter().map(|param| match param {
                GenericParam::Type(t) if &t.ident == b => quote!(#p::DefaultBackend),
                GenericParam::Type(t) => {
                    let i = &t.ident;
                    quote!(#i)
                }
                GenericParam::Lifetime(l) => {
                    let l = &l.lifetime;
                    quote!(#l)
                }
                GenericParam::Const(c) => {
                    let i = &c.ident;
                    quote!(#i)
                }
            });
            quote!(#ident<#(#args),*>)
        }
        None => quote!(#ident),
    };
    // The family names the type on any backend. Its impl is spelt with the `kind` token's span,
    // so that a type missing its kind's trait is reported on the attribute's `kind = …`.
    let family_param = match &backend {
        Some(b) => quote!(#b),
        None => quote!(B),
    };
    let kind_spanned = Ident::new(&ident.to_string(), kind.span());
    let family_ty = match &backend {
        Some(_) => quote!(#kind_spanned #ty_generics),
        None => quote!(#kind_spanned),
    };
    let family = quote_spanned! {kind.span()=>
        #[doc(hidden)]
        struct __Nc7Family;
        impl #p::family::#kind for __Nc7Family {
            type On<#family_param: #p::Backend> = #family_ty;
        }
    };

    Ok(quote! {
        #item

        #[automatically_derived]
        impl #impl_generics #p::Nucleotide for #ident #ty_generics #where_clause {
            const CLASS_NAME: &'static str = #class_name;
            const PATH: &'static str = ::core::concat!(::core::module_path!(), "::", #class_name);
            const KIND: #p::Kind = #p::Kind::#kind;
            const DOCS: &'static str = #docs;
        }

        const _: () = {
            #family

            #p::inventory::submit! {
                #p::Registration {
                    class_name: #class_name,
                    path: ::core::concat!(::core::module_path!(), "::", #class_name),
                    kind: #p::Kind::#kind,
                    docs: #docs,
                    signature: #p::registered_signature::<#p::DefaultBackend, #concrete>,
                    config_schema: #p::config_schema::<#p::DefaultBackend, #concrete>,
                    check_config: #p::check_config::<#p::DefaultBackend, #concrete>,
                    runtime: &#p::rt::#kind::<__Nc7Family>(::core::marker::PhantomData),
                }
            }
        };
    })
}

fn item_keyword_span(item: &Item) -> Span {
    match item {
        Item::Fn(f) => f.sig.fn_token.span,
        Item::Union(u) => u.union_token.span,
        Item::Trait(t) => t.trait_token.span,
        Item::Impl(i) => i.impl_token.span,
        Item::Mod(m) => m.mod_token.span,
        other => other.span(),
    }
}
