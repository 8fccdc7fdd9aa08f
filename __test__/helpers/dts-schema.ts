/**
 * A JSON Schema made from a type of napi's generated declarations (native/index.d.cts),
 * and a validator for it: checks that a value (a live status, say) has exactly the shape
 * the TypeScript type users import says. Strict: every object is closed
 * (`additionalProperties: false`) and every property not marked `?` is required.
 *
 * The schema covers what napi generates for baton's contract types: interfaces, string
 * unions (string enums), `Array<T>`, `T | null`, and the keywords `string`, `number`,
 * `boolean`.
 */
import { readFileSync } from 'node:fs'
import ts from 'typescript'

/** The subset of JSON Schema (draft 2020-12) the generator writes. */
export type Schema =
  | { type: 'string' | 'number' | 'boolean' | 'null' }
  | { enum: string[] }
  | { anyOf: Schema[] }
  | { type: 'array'; items: Schema }
  | {
      type: 'object'
      properties: Record<string, Schema>
      required: string[]
      additionalProperties: false
    }
  | { type: 'object'; additionalProperties: Schema }
  | { $ref: string }

/** A schema with its definitions (`$defs`), one per interface or type alias used. */
export interface RootSchema {
  $ref: string
  $defs: Record<string, Schema>
}

/** Make the schema of the type `name` declared in the `.d.ts` file `dts`. */
export function schemaOf(dts: string, name: string): RootSchema {
  const source = ts.createSourceFile(dts, readFileSync(dts, 'utf8'), ts.ScriptTarget.Latest, true)
  const declarations = new Map<string, ts.InterfaceDeclaration | ts.TypeAliasDeclaration>()
  for (const statement of source.statements) {
    if (ts.isInterfaceDeclaration(statement) || ts.isTypeAliasDeclaration(statement)) {
      declarations.set(statement.name.text, statement)
    }
  }
  const defs: Record<string, Schema> = {}
  const define = (typeName: string): Schema => {
    if (!(typeName in defs)) {
      const declaration = declarations.get(typeName)
      if (!declaration) throw new Error(`${dts}: no type ${typeName}`)
      defs[typeName] = { type: 'null' } // a placeholder while its members are read
      defs[typeName] = ts.isInterfaceDeclaration(declaration) ? objectOf(declaration) : typeOf(declaration.type)
    }
    return { $ref: `#/$defs/${typeName}` }
  }
  const objectOf = (declaration: ts.InterfaceDeclaration): Schema => {
    const properties: Record<string, Schema> = {}
    const required: string[] = []
    for (const member of declaration.members) {
      if (!ts.isPropertySignature(member) || !member.type) {
        throw new Error(`${declaration.name.text}: only plain properties are supported`)
      }
      const key = member.name.getText(source)
      properties[key] = typeOf(member.type)
      if (!member.questionToken) required.push(key)
    }
    return { type: 'object', properties, required, additionalProperties: false }
  }
  const typeOf = (node: ts.TypeNode): Schema => {
    switch (node.kind) {
      case ts.SyntaxKind.StringKeyword:
        return { type: 'string' }
      case ts.SyntaxKind.NumberKeyword:
        return { type: 'number' }
      case ts.SyntaxKind.BooleanKeyword:
        return { type: 'boolean' }
    }
    if (ts.isLiteralTypeNode(node)) {
      if (node.literal.kind === ts.SyntaxKind.NullKeyword) return { type: 'null' }
      if (ts.isStringLiteral(node.literal)) return { enum: [node.literal.text] }
    }
    if (ts.isParenthesizedTypeNode(node)) return typeOf(node.type)
    if (ts.isUnionTypeNode(node)) {
      const members = node.types.map(typeOf)
      // `'a' | 'b'`: one enum.
      if (members.every((m) => 'enum' in m)) return { enum: members.flatMap((m) => ('enum' in m ? m.enum : [])) }
      return { anyOf: members }
    }
    if (ts.isArrayTypeNode(node)) return { type: 'array', items: typeOf(node.elementType) }
    if (ts.isTypeReferenceNode(node)) {
      const refName = node.typeName.getText(source)
      if (refName === 'Array' && node.typeArguments?.length === 1) {
        return { type: 'array', items: typeOf(node.typeArguments[0]!) }
      }
      // `Record<string, V>` (a Rust map): an object of any keys, every value a V.
      if (refName === 'Record' && node.typeArguments?.length === 2) {
        if (node.typeArguments[0]!.kind !== ts.SyntaxKind.StringKeyword) {
          throw new Error(`${dts}: only Record<string, V> is supported, not ${node.getText(source)}`)
        }
        return { type: 'object', additionalProperties: typeOf(node.typeArguments[1]!) }
      }
      return define(refName)
    }
    throw new Error(`${dts}: unsupported type ${node.getText(source)}`)
  }
  define(name)
  return { $ref: `#/$defs/${name}`, $defs: defs }
}

/** Every way `value` breaks `schema`, as `path: problem` lines (empty when it conforms). */
export function validate(root: RootSchema, value: unknown): string[] {
  const errors: string[] = []
  const resolve = (schema: Schema): Schema => {
    let s = schema
    while ('$ref' in s) {
      const target = root.$defs[s.$ref.replace('#/$defs/', '')]
      if (!target) throw new Error(`unknown ${s.$ref}`)
      s = target
    }
    return s
  }
  const check = (schema: Schema, v: unknown, path: string, out: string[]): void => {
    const s = resolve(schema)
    if ('anyOf' in s) {
      const attempts = s.anyOf.map((member) => {
        const found: string[] = []
        check(member, v, path, found)
        return found
      })
      if (attempts.every((a) => a.length > 0)) out.push(...attempts.reduce((a, b) => (a.length <= b.length ? a : b)))
      return
    }
    if ('enum' in s) {
      if (typeof v !== 'string' || !s.enum.includes(v))
        out.push(`${path}: ${JSON.stringify(v)} is not one of ${s.enum.join(', ')}`)
      return
    }
    if (!('type' in s)) return
    switch (s.type) {
      case 'null':
        if (v !== null) out.push(`${path}: expected null, got ${JSON.stringify(v)}`)
        return
      case 'string':
      case 'number':
      case 'boolean':
        if (typeof v !== s.type) out.push(`${path}: expected a ${s.type}, got ${JSON.stringify(v)}`)
        return
      case 'array':
        if (!Array.isArray(v)) {
          out.push(`${path}: expected an array, got ${JSON.stringify(v)}`)
          return
        }
        v.forEach((item, i) => check(s.items, item, `${path}[${i}]`, out))
        return
      case 'object': {
        if (typeof v !== 'object' || v === null || Array.isArray(v)) {
          out.push(`${path}: expected an object, got ${JSON.stringify(v)}`)
          return
        }
        const record = v as Record<string, unknown>
        if (!('properties' in s)) {
          for (const [key, item] of Object.entries(record)) check(s.additionalProperties, item, `${path}.${key}`, out)
          return
        }
        for (const key of s.required) {
          if (!(key in record)) out.push(`${path}.${key}: required by the type, missing from the value`)
        }
        for (const [key, item] of Object.entries(record)) {
          const property = s.properties[key]
          if (!property) out.push(`${path}.${key}: in the value, not in the type (additionalProperties: false)`)
          else check(property, item, `${path}.${key}`, out)
        }
      }
    }
  }
  check(root, value, '$', errors)
  return errors
}
