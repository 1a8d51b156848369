//! `#[derive(Incoming)]` and `#[derive(Generated)]`: key structs, one field per key.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Fields, GenericParam, Ident, LitStr, Type};

/// Which derive is expanding.
#[derive(Clone, Copy)]
pub enum Side {
    Incoming,
    Generated,
}

impl Side {
    fn derive_name(self) -> &'static str {
        match self {
            Side::Incoming => "Incoming",
            Side::Generated => "Generated",
        }
    }
}

/// One field: its ident, the key name, its type and its doc line.
struct KeyField {
    ident: Ident,
    key: String,
    ty: Type,
    doc: String,
}

const FIELD_ATTRIBUTES: &str = "`rename`";

pub fn expand(input: DeriveInput, side: Side) -> syn::Result<TokenStream> {
    let derive = side.derive_name();
    let named = match &input.data {
        Data::Struct(s) => match &s.fields {
            Fields::Named(named) => named,
            Fields::Unnamed(f) => {
                return Err(syn::Error::new(
                    f.span(),
                    format!(
                        "`#[derive({derive})]` needs named fields, one per key; a tuple struct has no key names"
                    ),
                ));
            }
            Fields::Unit => {
                return Err(syn::Error::new(
                    input.ident.span(),
                    format!(
                        "`#[derive({derive})]` needs named fields, one per key; for no keys use `nc7_core::NoKeys`"
                    ),
                ));
            }
        },
        Data::Enum(e) => {
            return Err(syn::Error::new(
                e.enum_token.span,
                format!("`#[derive({derive})]` works on structs with named fields, not enums"),
            ));
        }
        Data::Union(u) => {
            return Err(syn::Error::new(
                u.union_token.span,
                format!("`#[derive({derive})]` works on structs with named fields, not unions"),
            ));
        }
    };

    let mut errors: Option<syn::Error> = None;
    let mut push = |e: syn::Error| match &mut errors {
        Some(all) => all.combine(e),
        None => errors = Some(e),
    };

    for attr in &input.attrs {
        if attr.path().is_ident("nc7") {
            push(syn::Error::new(
                attr.path().span(),
                format!(
                    "`#[nc7(...)]` goes on fields of a `{derive}` struct, not on the struct itself"
                ),
            ));
        }
    }

    let backend = match backend_param(&input) {
        Ok(b) => b,
        Err(e) => {
            push(e);
            None
        }
    };

    let mut fields: Vec<KeyField> = Vec::new();
    for field in &named.named {
        let ident = field.ident.clone().expect("named fields have idents");
        let (rename, attr_errors) = parse_field_attrs(&field.attrs);
        for e in attr_errors {
            push(e);
        }
        let key = match rename {
            Some(lit) => lit.value(),
            None => ident.to_string().trim_start_matches("r#").to_owned(),
        };
        if let Some(first) = fields.iter().find(|f| f.key == key) {
            let span = field.ident.as_ref().map_or(field.span(), Ident::span);
            push(syn::Error::new(
                span,
                format!(
                    "duplicate key `{key}`: field `{}` already has it; rename one with `#[nc7(rename = \"...\")]`",
                    first.ident
                ),
            ));
            continue;
        }
        fields.push(KeyField {
            ident,
            key,
            ty: field.ty.clone(),
            doc: doc_line(&field.attrs),
        });
    }

    if let Some(e) = errors {
        return Err(e);
    }
    Ok(emit(&input, side, backend, &fields))
}

/// The backend type parameter: the struct's one type parameter, or none.
fn backend_param(input: &DeriveInput) -> syn::Result<Option<Ident>> {
    for param in &input.generics.params {
        match param {
            GenericParam::Type(_) => {}
            GenericParam::Lifetime(l) => {
                return Err(syn::Error::new(
                    l.span(),
                    "key structs own their values; remove the lifetime parameter",
                ));
            }
            GenericParam::Const(c) => {
                return Err(syn::Error::new(
                    c.span(),
                    "key structs take one type parameter, the burn backend; remove the const parameter",
                ));
            }
        }
    }
    single_type_param(&input.generics, "key structs take")
}

/// The one type parameter (the burn backend) of a struct, or none; a second one is an error
/// on it, whose message starts with `subject` ("key structs take", "a nucleotide takes").
pub fn single_type_param(generics: &syn::Generics, subject: &str) -> syn::Result<Option<Ident>> {
    let types: Vec<&Ident> = generics.type_params().map(|t| &t.ident).collect();
    match types.as_slice() {
        [] => Ok(None),
        [b] => Ok(Some((*b).clone())),
        [_, second, ..] => Err(syn::Error::new(
            second.span(),
            format!(
                "{subject} one type parameter, the burn backend (`B: Backend`); remove this one"
            ),
        )),
    }
}

/// Reads `#[nc7(rename = "...")]`; every other content is an error on its token.
fn parse_field_attrs(attrs: &[syn::Attribute]) -> (Option<LitStr>, Vec<syn::Error>) {
    let mut rename: Option<LitStr> = None;
    let mut errors = Vec::new();
    for attr in attrs.iter().filter(|a| a.path().is_ident("nc7")) {
        let result = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("rename") {
                let lit: LitStr = meta.value()?.parse()?;
                if rename.is_some() {
                    return Err(syn::Error::new(
                        meta.path.span(),
                        "conflicting attributes: `rename` is given twice; keep one",
                    ));
                }
                let value = lit.value();
                if value.is_empty() || value.contains(':') || value.contains('*') {
                    return Err(syn::Error::new(
                        lit.span(),
                        "a key name cannot be empty or contain `:` or `*`; use a nested struct for nested keys",
                    ));
                }
                rename = Some(lit);
                Ok(())
            } else {
                let name = meta
                    .path
                    .get_ident()
                    .map_or_else(|| "?".to_owned(), Ident::to_string);
                Err(syn::Error::new(
                    meta.path.span(),
                    format!("unknown key attribute `{name}`, expected {FIELD_ATTRIBUTES}"),
                ))
            }
        });
        if let Err(e) = result {
            errors.push(e);
        }
    }
    (rename, errors)
}

/// The lines of a doc comment (`///` or `#[doc = "..."]`), trimmed.
fn doc_lines(attrs: &[syn::Attribute]) -> impl Iterator<Item = String> + '_ {
    attrs.iter().filter_map(|attr| match &attr.meta {
        syn::Meta::NameValue(nv) if attr.path().is_ident("doc") => match &nv.value {
            syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            }) => Some(s.value().trim().to_owned()),
            _ => None,
        },
        _ => None,
    })
}

/// The whole doc comment, lines trimmed.
pub fn doc_text(attrs: &[syn::Attribute]) -> String {
    doc_lines(attrs)
        .collect::<Vec<_>>()
        .join("\n")
        .trim()
        .to_owned()
}

/// The first paragraph of a field's doc comment, on one line.
pub fn doc_line(attrs: &[syn::Attribute]) -> String {
    let lines: Vec<String> = doc_lines(attrs)
        .skip_while(String::is_empty)
        .take_while(|l| !l.is_empty())
        .collect();
    lines.join(" ")
}

fn emit(
    input: &DeriveInput,
    side: Side,
    backend: Option<Ident>,
    fields: &[KeyField],
) -> TokenStream {
    let name = &input.ident;
    let (_, ty_generics, _) = input.generics.split_for_impl();
    let (b, impl_generics) = match &backend {
        Some(b) => {
            let (impl_generics, _, _) = input.generics.split_for_impl();
            (b.clone(), quote!(#impl_generics))
        }
        None => {
            let b = Ident::new("__Nc7B", Span::call_site());
            (b.clone(), quote!(<#b: ::nc7_core::__private::Backend>))
        }
    };
    let mut where_clause = input
        .generics
        .where_clause
        .clone()
        .unwrap_or_else(|| syn::parse_quote!(where));
    where_clause
        .predicates
        .push(syn::parse_quote!(#b: ::nc7_core::__private::Backend));

    let p = quote!(::nc7_core::__private);
    let specs = fields.iter().map(|f| {
        let (key, doc, ty) = (&f.key, &f.doc, &f.ty);
        quote_spanned!(ty.span()=> #p::key_spec::<#b, #ty>(#key, #doc))
    });
    let dynamic = fields.iter().map(|f| {
        let ty = &f.ty;
        quote_spanned!(ty.span()=> <#ty as #p::Field<#b>>::DYNAMIC)
    });
    let slots: Vec<Ident> = (0..fields.len())
        .map(|i| format_ident!("__nc7_slot_{}", i))
        .collect();
    let take = fields.iter().zip(&slots).map(|(f, slot)| {
        let (key, ty) = (&f.key, &f.ty);
        quote_spanned! {ty.span()=>
            let #slot: ::core::option::Option<#ty> = if <#ty as #p::Field<#b>>::DYNAMIC {
                ::core::option::Option::None
            } else {
                ::core::option::Option::Some(#p::take_field::<#b, #ty>(&mut __nc7_map, #key, __nc7_at)?)
            };
        }
    });
    let fill = fields.iter().zip(&slots).map(|(f, slot)| {
        let (key, ty, ident) = (&f.key, &f.ty, &f.ident);
        quote! {
            #ident: match #slot {
                ::core::option::Option::Some(__nc7_value) => __nc7_value,
                ::core::option::Option::None => <#ty as #p::Field<#b>>::from_value(
                    __nc7_rest.take().map(#p::take_rest),
                    &__nc7_at.key(#key),
                )?,
            }
        }
    });
    let put = fields.iter().map(|f| {
        let (key, ty, ident) = (&f.key, &f.ty, &f.ident);
        quote!(#p::put_field::<#b, #ty>(&mut __nc7_map, #key, self.#ident);)
    });
    let marker = match side {
        Side::Incoming => quote!(Incoming),
        Side::Generated => quote!(Generated),
    };

    quote! {
        #[automatically_derived]
        impl #impl_generics #p::Keys<#b> for #name #ty_generics #where_clause {
            const KEYS: &'static [#p::KeySpec] = &[#(#specs),*];
            const DYNAMIC: bool = false #(|| #dynamic)*;

            fn from_nest(
                __nc7_nest: #p::Nest<#b>,
                __nc7_at: &#p::At<'_>,
            ) -> ::core::result::Result<Self, #p::GlueError> {
                #[allow(unused_mut)]
                let mut __nc7_map = #p::open_map(__nc7_nest, __nc7_at)?;
                #(#take)*
                #[allow(unused_mut)]
                let mut __nc7_rest = ::core::option::Option::Some(__nc7_map);
                let __nc7_built = Self { #(#fill),* };
                if let ::core::option::Option::Some(__nc7_extra) = __nc7_rest {
                    #p::ignore_extra(&#p::take_rest(__nc7_extra), __nc7_at);
                }
                ::core::result::Result::Ok(__nc7_built)
            }

            fn into_nest(self) -> #p::Nest<#b> {
                #[allow(unused_mut)]
                let mut __nc7_map = #p::BTreeMap::new();
                #(#put)*
                #p::Nest::Map(__nc7_map)
            }
        }

        #[automatically_derived]
        impl #impl_generics #p::Field<#b> for #name #ty_generics #where_clause {
            const KIND: #p::ValueKind = #p::ValueKind::Nested;
            const CHILDREN: &'static [#p::KeySpec] = <Self as #p::Keys<#b>>::KEYS;

            fn from_value(
                __nc7_value: ::core::option::Option<#p::Nest<#b>>,
                __nc7_at: &#p::At<'_>,
            ) -> ::core::result::Result<Self, #p::GlueError> {
                #p::nested_from_value::<#b, Self>(__nc7_value, __nc7_at)
            }

            fn into_value(self) -> ::core::option::Option<#p::Nest<#b>> {
                #p::nested_into_value::<#b, Self>(self)
            }
        }

        #[automatically_derived]
        impl #impl_generics #p::#marker<#b> for #name #ty_generics #where_clause {}
    }
}
